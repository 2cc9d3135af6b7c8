"""A node made of real parts, for front mode's tests and benchmark.

- Debian's containerd 1.6 with its CRI plugin and runc, on its own root, state,
  runc root and socket under a work directory (native snapshotter,
  restrict_oom_score_adj, host-network pods: no CNI here).
- Its registry configuration (`config_path` + `certs.d/_default/hosts.toml`)
  names a mirror: imagelet's, or Debian's docker-registry (distribution 2.8)
  standing in for it with the same images pushed by skopeo.
- Images built here from busybox-static as OCI layouts (not committed).
- kubelet 1.26's image sequence before CreateContainer (EnsureImageExists in
  pkg/kubelet/images/image_manager.go) and a pod that really runs.

Everything started is stopped by stop(), even after a failure: containerd,
its shims (found by the socket they serve, by PID), runc containers (by the
runc root this node owns), docker-registry. Needs root.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time

import sys

import grpc

from bench_containerd import Containerd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test", "integration"))

CONTAINERD_CONFIG = """\
version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.opt",
]
[grpc]
  address = "{work}/containerd.sock"
[ttrpc]
  address = "{work}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  sandbox_image = "{sandbox}"
  # Lowering oom_score_adj is not permitted here.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{work}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{work}/cni/bin"
    conf_dir = "{work}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{work}/certs.d"
"""

# What `imagelet mirror-config containerd` prints for a mirror on HOST:PORT (issue 23). No TLS key on a
# plain-HTTP host: containerd >= 1.6.25 / 1.7.7 would try HTTPS first.
HOSTS_TOML = """\
[host."http://{mirror}"]
  capabilities = ["pull", "resolve"]
"""

SANDBOX = "docker.io/library/pause:front"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn, timeout=30, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if fn():
                return True
        except Exception:
            pass
        time.sleep(step)
    return fn()


# --- images -----------------------------------------------------------------


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


def marker_image(layout, tag, marker):
    """A busybox-static image whose command prints `marker`; returns its ID."""
    return layout.add(tag, [busybox_layer()], ["/bin/echo", marker])


def pause_image(layout, tag="pause"):
    return layout.add(tag, [busybox_layer()], ["/bin/sleep", "3600"])


# --- the stand-in mirror: distribution 2.8 ---------------------------------------


class DistributionRegistry:
    """Debian's docker-registry on 127.0.0.1, its storage under `work`."""

    def __init__(self, work):
        os.makedirs(work, exist_ok=True)
        self.work = work
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.config = os.path.join(work, "registry.yml")
        with open(self.config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {work}/data\n"
                f"http:\n  addr: {self.addr}\n"
            )
        self.log_path = os.path.join(work, "registry.log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def up():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        if not wait_for(up, 20):
            raise RuntimeError(f"docker-registry did not start: {open(self.log_path).read()[-2000:]}")

    def push(self, layout, tag, name):
        """skopeo copy of layout:tag to this registry as `name` (`library/bb:1.0`)."""
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{self.addr}/{name}"],
            check=True, capture_output=True, timeout=600,
        )

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


# --- the runtime -------------------------------------------------------------


class Node:
    """containerd + CRI + runc on `work`, pulling through `mirror` (HOST:PORT), or with no mirror configured."""

    def __init__(self, work, mirror=None, sandbox=SANDBOX, registries=()):
        """`registries`: HOST:PORT of plain-HTTP registries images may be named by (their own hosts.toml)."""
        os.makedirs(work, exist_ok=True)
        self.work = work
        # bench_containerd's daemon (start, stop), with this node's CRI configuration.
        self.ctd = Containerd(work)
        self.socket = self.ctd.socket
        self.endpoint = f"unix://{self.socket}"
        self.log_path = self.ctd.log_path
        for d in ("cni/bin", "cni/conf", "certs.d", "pods"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        with open(self.ctd.config, "w") as f:
            f.write(CONTAINERD_CONFIG.format(work=work, sandbox=sandbox))
        if mirror is not None:
            os.makedirs(os.path.join(work, "certs.d", "_default"), exist_ok=True)
            with open(os.path.join(work, "certs.d", "_default", "hosts.toml"), "w") as f:
                f.write(HOSTS_TOML.format(mirror=mirror))
        for registry in registries:
            os.makedirs(os.path.join(work, "certs.d", registry), exist_ok=True)
            with open(os.path.join(work, "certs.d", registry, "hosts.toml"), "w") as f:
                f.write(f'server = "http://{registry}"\n')
        self.channel = None
        self.pb = None

    def start(self):
        import cri_stubs

        self.ctd.start()
        self.pb, pbg = cri_stubs.load()
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.images = pbg.ImageServiceStub(self.channel)
        self.runtime = pbg.RuntimeServiceStub(self.channel)
        if not wait_for(lambda: self.images.ListImages(self.pb.ListImagesRequest(), timeout=2) is not None, 60):
            raise RuntimeError(f"containerd's CRI did not come up: {open(self.log_path).read()[-3000:]}")

    def stop_daemon(self):
        """containerd only (its shims and containers keep running, as on a real restart)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.ctd.stop()

    def _runc(self, *args):
        root = os.path.join(self.work, "runc", "k8s.io")
        if not os.path.isdir(root):
            return ""
        return subprocess.run(["runc", "--root", root, *args], capture_output=True, text=True, timeout=30).stdout

    def stop(self):
        """Everything this node started: pods, containerd, shims, runc containers, mounts."""
        try:
            if self.channel is not None:
                for sandbox in self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=10).items:
                    self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=30)
                    self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=30)
        except grpc.RpcError:
            pass
        self.stop_daemon()
        for line in self._runc("list", "-q").split():
            self._runc("kill", line, "KILL")
            self._runc("delete", "-f", line)
        for pid in self.shims():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(self.work)]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)

    def shims(self):
        """PIDs of containerd-shim-runc-v2 processes serving this node's containerd."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and self.socket.encode() in b" ".join(cmd):
                found.append(int(pid))
        return found

    def run_pod(self, image_ref, name, timeout=60):
        """A host-network pod with one container of `image_ref` (an ID, as kubelet passes it); returns its log."""
        pb = self.pb
        logdir = os.path.join(self.work, "pods", name)
        os.makedirs(logdir, exist_ok=True)
        sandbox_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),
            log_directory=logdir,
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))),
        )
        sandbox = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config), timeout=timeout).pod_sandbox_id
        container = self.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sandbox,
            config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name, attempt=0), image=pb.ImageSpec(image=image_ref), log_path="c.log"),
            sandbox_config=sandbox_config,
        ), timeout=timeout).container_id
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container), timeout=timeout)
        return sandbox, container, os.path.join(logdir, "c.log")

    def wait_exit(self, container, timeout=60):
        pb = self.pb
        return wait_for(lambda: self.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container), timeout=10).status.state == pb.CONTAINER_EXITED, timeout)

    def wait_running(self, container, timeout=60):
        pb = self.pb
        return wait_for(lambda: self.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container), timeout=10).status.state in (pb.CONTAINER_RUNNING, pb.CONTAINER_EXITED), timeout, step=0.005)


class NeverPull(Exception):
    """kubelet's ErrImageNeverPull."""


def ensure_image_exists(images, pb, ref, policy, timeout=120):
    """kubelet 1.26 EnsureImageExists on an image service: ImageStatus, then PullImage by policy; the image ref for CreateContainer."""
    status = images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=timeout)
    present = status.image.id if status.HasField("image") else ""
    if policy == "Never" or (policy == "IfNotPresent" and present):
        if not present:
            raise NeverPull(f"image {ref} is not present with pull policy of Never")
        image_ref = present
    else:
        image_ref = images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=timeout).image_ref
    # kuberuntime's generateContainerConfig: ImageStatus of the ref again (the user, the size).
    again = images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_ref)), timeout=timeout)
    assert again.HasField("image"), f"ImageStatus({image_ref}) after EnsureImageExists found nothing"
    return image_ref


def read_log(path):
    """The CRI log's text lines (`<time> stdout F <text>` → text)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split(" ", 3)[3] for line in f if line.count(" ") >= 3]
