"""Client-side pieces for the mirror's benchmark and soak (scripts/bench_mirror.py,
mirror_soak.py): a big single-layer image written as an OCI layout, a loopback
port, and downloads that hash what they receive. Python's http.client only:
it shares no code with imagelet's server or with distribution's."""
import hashlib
import http.client
import json
import os
import socket
import tarfile
import time

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CHUNK = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def write_big_layout(layout, ref, size, media_type=LAYER_MEDIA_TYPE):
    """An OCI layout holding one image `ref` (its org.opencontainers.image.ref.name)
    whose only layer is an uncompressed tar of one file of `size` random bytes.
    The layer is its own diff_id, so the same digest names it in every store it is
    copied to. Returns {"manifest", "config", "layer": digest, "layer_size"}."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    tmp = os.path.join(layout, "blobs", "layer.tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        info = tarfile.TarInfo("data/payload.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1700000000
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        f.write(header)
        h.update(header)
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            f.write(block)
            h.update(block)
            left -= len(block)
        pad = b"\0" * ((512 - size % 512) % 512 + 1024)  # the file's last block, then two empty ones
        f.write(pad)
        h.update(pad)
        layer_size = f.tell()
    layer = "sha256:" + h.hexdigest()
    os.rename(tmp, os.path.join(layout, "blobs", "sha256", layer[7:]))
    config = {
        "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }
    config_digest, config_size = _blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": media_type, "digest": layer, "size": layer_size}],
    }
    manifest_digest, manifest_size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": ref}}]}, f)
    return {"manifest": manifest_digest, "config": config_digest, "layer": layer, "layer_size": layer_size}


class Fetched:
    def __init__(self, status, headers, size, digest, seconds, error=None):
        self.status, self.headers, self.size, self.digest, self.seconds, self.error = status, headers, size, digest, seconds, error


def fetch(port, path, method="GET", headers=None, timeout=60, read_delay=0.0, chunk=CHUNK, stop_after=None, progress=None):
    """One request on a new connection; the body is read in `chunk`s into sha256
    (sleeping `read_delay` between reads: a slow reader), or abandoned after
    `stop_after` bytes (the connection is closed: a client that vanishes);
    `progress(bytes so far)` is called after each read. An aborted body is an
    `error`, never a short answer taken for whole."""
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    status, got, size, h = None, {}, 0, hashlib.sha256()
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        status, got = r.status, {k.lower(): v for k, v in r.getheaders()}
        while method != "HEAD":
            block = r.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
            if progress:
                progress(size)
            if stop_after is not None and size >= stop_after:
                break
            if read_delay:
                time.sleep(read_delay)
        expected = got.get("content-length")
        if stop_after is None and method != "HEAD" and expected is not None and int(expected) != size:
            return Fetched(status, got, size, None, time.perf_counter() - t, f"short body: {size} of {expected} bytes")
        return Fetched(status, got, size, "sha256:" + h.hexdigest(), time.perf_counter() - t)
    except (OSError, http.client.HTTPException) as e:
        return Fetched(status, got, size, None, time.perf_counter() - t, f"{type(e).__name__}: {e}")
    finally:
        c.close()


def wait_for_v2(port, proc, log_path, limit_s=30):
    """Waits until GET /v2/ answers 200 on the port (the server's start-up)."""
    t = time.monotonic()
    while time.monotonic() - t < limit_s:
        if proc.poll() is not None:
            with open(log_path) as f:
                raise RuntimeError(f"server exited {proc.returncode}: {f.read()[-3000:]}")
        if fetch(port, "/v2/", timeout=2).status == 200:
            return
        time.sleep(0.05)
    with open(log_path) as f:
        raise RuntimeError(f"no answer on 127.0.0.1:{port}/v2/ within {limit_s} s: {f.read()[-3000:]}")
