"""Harness: runs the compiled imagelet binary on a unix socket in a temp dir.

The client is Debian's python3-grpcio (gRPC C-core), which shares no code path
with the server. Build first (`npm run build`); IMAGELET_BIN overrides the path.
"""
import json
import os
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

import cri_stubs

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
FIXTURES = os.path.join(ROOT, "test", "fixtures")
EXAMPLES = os.path.join(ROOT, "examples")


# `imagelet images` of examples/sample-oci, as crictl would print it.
SAMPLE_IMAGES_TABLE = (
    "IMAGE                          TAG      IMAGE ID        SIZE\n"
    "docker.io/library/edge-tools   2.0      6470921982b6a   885B\n"
    "example.com/edge/hello         1.0      1dd76ae2e114a   953B\n"
    "example.com/edge/hello         latest   1dd76ae2e114a   953B\n"
)


def expected():
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        return json.load(f)


class Server:
    def __init__(self, workdir, config_text, args=(), wrapper=()):
        """`wrapper` runs the binary through another command (setpriv, to serve as another user)."""
        self.workdir = workdir
        self.socket = os.path.join(workdir, "run", "imagelet.sock")
        self.config = os.path.join(workdir, "imagelet.toml")
        with open(self.config, "w") as f:
            f.write(f'socket = "{self.socket}"\n' + config_text)
        self.log_path = os.path.join(workdir, "imagelet.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*wrapper, BIN, "serve", "--config", self.config, *args], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.channel = None
        self.pb, pbg = cri_stubs.load()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imagelet exited {self.proc.returncode}: {self.log()}")
            if "serving CRI ImageService" in self.log():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"imagelet did not start: {self.log()}")
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.stub = pbg.ImageServiceStub(self.channel)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    # Small helpers so tests read as the CRI calls they make.
    def list_images(self, filter_ref=None, timeout=10):
        req = self.pb.ListImagesRequest()
        if filter_ref is not None:
            req.filter.image.image = filter_ref
        return self.stub.ListImages(req, timeout=timeout).images

    def image_status(self, ref, verbose=False, timeout=10):
        return self.stub.ImageStatus(
            self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref), verbose=verbose), timeout=timeout
        )

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="imagelet-it-") as d:
        yield d


@pytest.fixture
def serve(workdir):
    """serve(config_text, args=()) starts imagelet; every server is stopped at the end."""
    servers = []

    def start(config_text, args=(), subdir=None):
        wd = workdir if subdir is None else os.path.join(workdir, subdir)
        os.makedirs(wd, exist_ok=True)
        s = Server(wd, config_text, args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def oci_backend(path, name=None, **options):
    lines = ["[[backend]]", 'type = "oci-layout"', f'path = "{path}"']
    if name:
        lines.append(f'name = "{name}"')
    for k, v in options.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {str(v).lower()}")
        else:
            lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    return "\n".join(lines) + "\n"


def fixture_backends():
    """The three tool-made layouts, in this order."""
    return "".join(
        oci_backend(os.path.join(FIXTURES, name), name=name)
        for name in ("oci-umoci", "oci-multi", "oci-skopeo-noref")
    )


def store_backends():
    """The fixture stores, one entry per kind of store: kind → its [[backend]] tables."""
    f = FIXTURES
    return {
        "oci-layout": "".join(
            f'[[backend]]\ntype = "oci-layout"\nname = "{n}"\npath = "{f}/{n}"\n' for n in ("oci-umoci", "oci-multi", "oci-skopeo-noref")
        ),
        "archives": f'[[backend]]\ntype = "archives"\npath = "{f}/archives/store"\n',
        "containers-storage": f'[[backend]]\ntype = "containers-storage"\npath = "{f}/containers-storage"\n',
        "docker": f'[[backend]]\ntype = "docker"\npath = "{f}/docker/root"\n',
        "isulad": f'[[backend]]\ntype = "isulad"\npath = "{f}/isulad/graph"\nembedded_manifests = "{f}/isulad/embedded"\n',
        "containerd": f'[[backend]]\ntype = "containerd"\npath = "{f}/containerd/root"\n',
    }


def run_cli(*args, env=None, timeout=30):
    e = dict(os.environ)
    e.pop("IMAGELET_ENDPOINT", None)
    if env:
        e.update(env)
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=e, timeout=timeout)


# The runnable stores for the end-to-end pod tests, made once per session (node_runtime.py).
from node_runtime import runnable_stores  # noqa: E402,F401


def stop_process_group(proc, timeout=15):
    """Ends a process started with start_new_session=True and everything it started: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
