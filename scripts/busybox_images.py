"""Runnable images built here from busybox-static, as OCI layouts (not committed):
front mode's tests and benchmark (scripts/bench_front.py) make the images they
need at run time, a marker image, a sandbox image and a 256 MiB one, with
nothing but Python and /bin/busybox (Debian's busybox-static)."""
import gzip
import hashlib
import io
import json
import os
import tarfile

SANDBOX = "docker.io/library/pause:front"


def _tar(entries):
    """entries: (name, kind, data_or_target, mode); a plain uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1704164645
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                t.addfile(info)
            elif kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:  # ("bigfile", path of the content)
                info.size = os.path.getsize(data)
                with open(data, "rb") as f:
                    t.addfile(info, f)
    return buf.getvalue()


def busybox_layer():
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    entries = [("bin", "dir", None, 0o755), ("bin/busybox", "file", busybox, 0o755)]
    entries += [(f"bin/{tool}", "link", "busybox", 0o777) for tool in ("sh", "echo", "sleep", "cat", "true")]
    entries += [("tmp", "dir", None, 0o1777), ("proc", "dir", None, 0o755), ("dev", "dir", None, 0o755), ("sys", "dir", None, 0o755), ("etc", "dir", None, 0o755)]
    return _tar(entries)


def random_layer(path, size):
    """A layer of one file of `size` random bytes (written to `path` first, streamed into the tar)."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return _tar([("data", "dir", None, 0o755), ("data/random.bin", "bigfile", path, 0o644)])


class Layout:
    """An OCI image layout written here: blobs, index.json with ref.name annotations."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.manifests = []

    def put(self, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return f"sha256:{digest}"

    def add(self, tag, layers, cmd, gzip_layers=True):
        """Adds an image tagged `tag` (an OCI ref.name: just the tag); returns its ID (config digest)."""
        descs, diff_ids = [], []
        for raw in layers:
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            blob = gzip.compress(raw, compresslevel=1, mtime=0) if gzip_layers else raw
            media = "application/vnd.oci.image.layer.v1.tar+gzip" if gzip_layers else "application/vnd.oci.image.layer.v1.tar"
            descs.append({"mediaType": media, "digest": self.put(blob), "size": len(blob)})
        config = json.dumps({
            "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }, sort_keys=True).encode()
        config_digest = self.put(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
            "layers": descs,
        }).encode()
        self.manifests.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": self.put(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.manifests}, f)
        return config_digest


def marker_image(layout, tag, marker, layers=()):
    """A busybox-static image (with `layers` below busybox's) whose command prints `marker`, then sleeps
    (as make-fixtures-runnable's markers: a pod's containers stay up until the pod is stopped); returns its ID."""
    return layout.add(tag, [*layers, busybox_layer()], ["/bin/sh", "-c", f"echo {marker}; exec sleep 3600"])


def pause_image(layout, tag="pause"):
    """The sandbox image: sleeps until TERM."""
    return layout.add(tag, [busybox_layer()], ["/bin/sh", "-c", 'trap "exit 0" TERM INT; sleep 2147483647 & wait'])
