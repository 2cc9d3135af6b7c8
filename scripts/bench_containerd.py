"""containerd from Debian as the benchmark's peer: its own root, state and
socket under a work directory, the CRI plugin on with the native snapshotter,
images imported with `ctr images import --no-unpack`. Needs root.

The CRI plugin serves runtime.v1.ImageService on containerd's main socket, so
the same h2load requests drive it and imagelet."""
import os
import subprocess
import time

# The daemon's own settings, shared with the end-to-end pod harness (test/integration/node_runtime.py).
BASE_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
# Snapshotters that need kernel features or extra tools; images are never unpacked here.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.opt",
]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
  # At info, the CRI plugin logs every image event (two lines per imported image).
  level = "warn"
[metrics]
  address = ""
"""
CONFIG = BASE_CONFIG + """\
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
"""


def version():
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


class Containerd:
    def __init__(self, work, root=None):
        """`root` is containerd's root (default <work>/root): a test points it at a copy of a fixture."""
        os.makedirs(work, exist_ok=True)
        self.work = work
        self.socket = os.path.join(work, "containerd.sock")
        self.config = os.path.join(work, "config.toml")
        self.log_path = os.path.join(work, "containerd.log")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(root=root or os.path.join(work, "root"), state=os.path.join(work, "state"), sock=self.socket))
        self.proc = None

    def start(self):
        """Starts containerd; returns the perf_counter() instant just before the exec."""
        log = open(self.log_path, "a")
        t = time.perf_counter()
        self.proc = subprocess.Popen(["containerd", "--config", self.config], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return t

    def wait_socket(self, limit_s=60):
        t = time.perf_counter()
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.perf_counter() - t > limit_s:
                raise SystemExit(f"containerd did not start: {open(self.log_path).read()[-4000:]}")
            time.sleep(0.01)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ctr(self, *args, timeout=3600, namespace="k8s.io"):
        out = subprocess.run(["ctr", "-a", self.socket, "-n", namespace, *args], capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise SystemExit(f"ctr {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def import_archive(self, tarball):
        """`ctr images import --no-unpack` of an OCI archive; returns seconds taken."""
        t = time.perf_counter()
        self.ctr("images", "import", "--no-unpack", tarball)
        return time.perf_counter() - t
