"""A node made of real parts, for end-to-end pod tests: Debian's containerd 1.6
with its CRI plugin and runc, on a temporary root, driven through the CRI
RuntimeService by python3-grpcio as kubelet 1.26 drives it.

Usage (pytest):

    from node_runtime import PAUSE, ContainerdNode, ensure_image

    def test_pod(tmp_path, runnable_stores):          # a session fixture, see below
        with ContainerdNode(tmp_path / "node", sandbox_image=PAUSE,
                            hosts_toml=mirror_config_text) as node:
            pod = node.run_pod("p1")                  # RunPodSandbox, host network (pulls PAUSE)
            # kubelet's image sequence against an image service socket: containerd's own
            # (mirror mode: node.socket) or imagelet's (front mode: server.socket).
            image_id = ensure_image(node.socket, "example.com/imagelet/marker:oci-layout", "IfNotPresent",
                                    sandbox_config=pod.config)
            node.start_container(pod, "c1", image_id) # CreateContainer + StartContainer
            node.wait_log(pod, "c1", "imagelet-marker-oci-layout")

`ContainerdNode.__exit__` (or `.close()`) stops every pod, containerd, every
containerd-shim-runc-v2 it started and every runc container under its runc
root, unmounts what is left under its directory, and then raises
`Leftovers` if any process still refers to the node's directory: a process
left holding CI's output open would hang CI.

`runnable_stores` (a session fixture, imported by conftest.py so every module
shares one) runs scripts/make-fixtures-runnable once per session into a temp
directory and returns a `RunnableStores`: `.path(kind)`, `.backend(kind)` (the
imagelet [[backend]] table serving that store), `.image_id(ref)`, and the
names PAUSE and `marker(kind)`.

Front mode: start the node first, then imagelet with
`[runtime] endpoint = "unix://{node.socket}"` and its [mirror] (the node's
hosts_toml from `imagelet mirror-config containerd`: write it with
`node.write_hosts_toml(text)` once imagelet's port is known; containerd reads
certs.d at every pull), and call `ensure_image(server.socket, ...)`.

Also here: `stand_in_mirror` (distribution 2.8 standing in for the mirror),
`Dockerd` and `Podman` (registry clients on temporary roots, same teardown
rules; Dockerd and the registry are daemons.py's),
`needs_node` (the skip mark), `processes_in`/`sweep` (what a test left behind).

Facts these machines impose (see docs/runtimes.md): containers run as root with
runc (crun fails on hybrid cgroups); the CRI needs restrict_oom_score_adj =
true, the native snapshotter and host-network pods (there is no CNI).
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

import cri_stubs
import daemons

sys.path.insert(0, os.path.join(cri_stubs.ROOT, "scripts"))
from bench_containerd import BASE_CONFIG  # noqa: E402  (containerd's own settings, one copy)

ROOT = cri_stubs.ROOT
MAKE_RUNNABLE = os.path.join(ROOT, "scripts", "make-fixtures-runnable")
STORE_KINDS = ("oci-layout", "docker-archive", "oci-archive", "containers-storage", "containerd", "docker")
PAUSE = "example.com/imagelet/pause:1.0"
HUB_MARKER = "docker.io/library/imagelet-marker:1.0"
NODE = 2  # runtime.v1.NamespaceMode.NODE: the host's namespace

needs_node = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("containerd", "containerd-shim-runc-v2", "runc", "umoci", "skopeo")),
    reason="needs root and Debian's containerd, runc, umoci, skopeo, busybox-static",
)


def marker(kind):
    return f"example.com/imagelet/marker:{kind}"


# --- kubelet's image sequence -------------------------------------------------------------

class ImageNeverPull(Exception):
    """kubelet's ErrImageNeverPull: policy Never and the image is not present."""


def default_tag(image):
    """kubelet's applyDefaultImageTag: only a missing tag is added; the name is never qualified."""
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and ":" not in last:
        return image + ":latest"
    return image


def ensure_image(image_socket, image, policy, sandbox_config=None, timeout=60, calls=None):
    """kubelet 1.26 pkg/kubelet/images/image_manager.go EnsureImageExists, against the image
    service on `image_socket` (a path or unix:// address): ImageStatus; PullImage when the policy
    says so (Always; IfNotPresent and absent); returns the image ID that kubelet hands to
    CreateContainer (GetImageRef: the status's id; after a pull: PullImage's image_ref).
    `calls`, a list, records the calls made. Raises ImageNeverPull or grpc.RpcError."""
    pb, pbg = cri_stubs.load()
    address = image_socket if image_socket.startswith("unix:") else f"unix:{image_socket}"
    with grpc.insecure_channel(address) as channel:
        stub = pbg.ImageServiceStub(channel)
        spec = pb.ImageSpec(image=default_tag(image))

        def call(name, request):
            if calls is not None:
                calls.append(name)
            return getattr(stub, name)(request, timeout=timeout)

        status = call("ImageStatus", pb.ImageStatusRequest(image=spec))
        present = status.HasField("image") and status.image.id != ""
        pull = policy == "Always" or (policy == "IfNotPresent" and not present)
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"pull policy {policy!r}")
        if not pull:
            if not present:
                raise ImageNeverPull(image)
            return status.image.id
        request = pb.PullImageRequest(image=spec)
        if sandbox_config is not None:
            request.sandbox_config.CopyFrom(sandbox_config)
        return call("PullImage", request).image_ref


# --- what a test left behind ---------------------------------------------------------------

def processes_in(directory, *names):
    """(pid, cmdline) of every process whose command line names `directory` (or one of `names`),
    or whose root or cwd lies under it: daemons, shims, and containers (their root is a rootfs
    under the daemon's state)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        links = []
        for link in ("root", "cwd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/{link}"))
            except OSError:
                pass
        if directory in cmdline or any(n in cmdline for n in names) or any(l.startswith(directory + "/") for l in links):
            found.append((pid, cmdline.strip()))
    return found


PR_SET_CHILD_SUBREAPER = 36
ORPHAN_NAMES = ("containerd-shim", "containerd", "runc", "dockerd", "docker-proxy")


def become_subreaper(on=True):
    """Shims daemonize (their starter exits), so they are orphans; on a machine whose PID 1 does not
    reap, each one that exits would stay a zombie. While a node runs, this process is a subreaper: it
    inherits them, and sweep() collects them and turns this off again (so other tests' orphans go to
    PID 1 as usual)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def reap_orphans():
    """waitpid() on this process's zombie children that a daemon left (by command name only: the
    subprocesses a test tracks are waited for by their Popen)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me and state == "Z" and comm.startswith(ORPHAN_NAMES):
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def mounts_under(directory):
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(directory + "/")]


def stop_group(proc, timeout=20):
    """SIGTERM to the process group a daemon leads (start_new_session), SIGKILL after `timeout`.
    Returns False when it had to kill."""
    if proc.poll() is not None:
        try:  # its group may still hold children
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def sweep(directory, *names):
    """Kills by PID whatever still refers to `directory`, unmounts what is mounted under it;
    returns descriptions of what it found (empty: nothing was left)."""
    survivors = processes_in(directory, *names)
    for pid, _ in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while processes_in(directory, *names) and time.time() < deadline:
        time.sleep(0.05)
    mounts = mounts_under(directory)
    for m in sorted(mounts, reverse=True):
        if subprocess.run(["umount", m], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)
    left = processes_in(directory, *names)
    reap_orphans()
    become_subreaper(False)
    return (
        [f"pid {pid}: {cmd[:160]}" for pid, cmd in survivors]
        + [f"still alive: pid {pid}: {cmd[:160]}" for pid, cmd in left]
        + [f"mount {m}" for m in mounts]
    )


# --- containerd with its CRI plugin on a temporary root ----------------------------------

CONTAINERD_CONFIG = BASE_CONFIG + """\
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Lowering oom_score_adj is not permitted here; the CRI would fail every container.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  # An ephemeral port: several nodes may run at once.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state under {dir}, so teardown finds (and removes) exactly this node's containers.
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"""


class Leftovers(AssertionError):
    """A process or mount the node started was still there after teardown."""


class Pod:
    def __init__(self, pod_id, config, log_directory):
        self.id = pod_id
        self.config = config
        self.log_directory = log_directory
        self.containers = {}


class ContainerdNode:
    """containerd 1.6 + CRI + runc on `directory` (created; a fresh root every time).

    `hosts_toml`: text written to <directory>/certs.d/_default/hosts.toml (what
    `imagelet mirror-config containerd` prints), or None for no mirror. `env`: added to containerd's
    environment (daemons.CanaryProxy's env, so a pull that goes past the mirror fails and is seen)."""

    def __init__(self, directory, sandbox_image=PAUSE, hosts_toml=None, start=True, env=None):
        self.dir = os.path.realpath(str(directory))
        os.makedirs(self.dir, exist_ok=True)
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.runc_root = os.path.join(self.dir, "runc")
        self.certs = os.path.join(self.dir, "certs.d")
        self.socket = os.path.join(self.dir, "containerd.sock")
        self.config_path = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        self.sandbox_image = sandbox_image
        self.env = {**os.environ, **(env or {})}
        os.makedirs(self.certs, exist_ok=True)
        if hosts_toml is not None:
            self.write_hosts_toml(hosts_toml)
        with open(self.config_path, "w") as f:
            f.write(
                CONTAINERD_CONFIG.format(
                    dir=self.dir, root=self.root, state=self.state, sock=self.socket, sandbox_image=sandbox_image,
                    runc_root=self.runc_root, certs=self.certs,
                )
            )
        self.proc = None
        self.pods = []
        self.pb, pbg = cri_stubs.load()
        self._pbg = pbg
        self.channel = None
        if start:
            try:
                self.start()
            except BaseException:
                self.close(raise_leftovers=False)  # a containerd that failed to answer is still stopped
                raise

    def write_hosts_toml(self, text, host="_default"):
        d = os.path.join(self.certs, host)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts.toml"), "w") as f:
            f.write(text)

    # -- lifecycle
    def start(self, limit_s=30):
        become_subreaper()
        with open(self.log_path, "a") as log:
            # Its own process group: teardown signals the group, never a name.
            self.proc = subprocess.Popen(
                ["containerd", "--config", self.config_path], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=self.env,
            )
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.runtime = self._pbg.RuntimeServiceStub(self.channel)
        self.images = self._pbg.ImageServiceStub(self.channel)
        deadline = time.time() + limit_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}: {self.log()[-3000:]}")
            if os.path.exists(self.socket):
                try:
                    self.runtime.Version(self.pb.VersionRequest(), timeout=2)
                    return self
                except grpc.RpcError:
                    pass
            if time.time() > deadline:
                raise RuntimeError(f"containerd's CRI did not answer within {limit_s}s: {self.log()[-3000:]}")
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(raise_leftovers=exc[0] is None)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- pods
    def run_pod(self, name, namespace="default"):
        """RunPodSandbox of a host-network pod (the sandbox image is the config's sandbox_image)."""
        pb = self.pb
        log_directory = os.path.join(self.dir, "pods", name)
        os.makedirs(log_directory, exist_ok=True)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace=namespace, attempt=0),
            log_directory=log_directory,
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=NODE))
            ),
        )
        pod_id = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        pod = Pod(pod_id, config, log_directory)
        self.pods.append(pod)
        return pod

    def start_container(self, pod, name, image_id, timeout=60):
        """CreateContainer with the image ID kubelet's sequence returned, then StartContainer."""
        pb = self.pb
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image_id),
            log_path=f"{name}.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=pb.NamespaceOption(network=NODE))
            ),
        )
        cid = self.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config), timeout=timeout
        ).container_id
        pod.containers[name] = cid
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=timeout)
        return cid

    def container_log(self, pod, name):
        try:
            with open(os.path.join(pod.log_directory, f"{name}.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pod, name, marker_text, limit_s=30):
        """Waits for `marker_text` as a CRI log line's message (`<time> stdout F <text>`)."""
        deadline = time.time() + limit_s
        while time.time() < deadline:
            for line in self.container_log(pod, name).splitlines():
                parts = line.split(" ", 3)
                if len(parts) == 4 and parts[1] == "stdout" and parts[3] == marker_text:
                    return line
            time.sleep(0.05)
        status = self.runtime.ContainerStatus(self.pb.ContainerStatusRequest(container_id=pod.containers[name]), timeout=10)
        raise AssertionError(
            f"no {marker_text!r} in {name}'s log within {limit_s}s; log: {self.container_log(pod, name)!r}; "
            f"state: {status.status.state} reason {status.status.reason!r} {status.status.message!r}"
        )

    def image_id(self, ref):
        """containerd's own ImageStatus id of `ref` ('' when absent)."""
        status = self.images.ImageStatus(self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref)), timeout=10)
        return status.image.id if status.HasField("image") else ""

    CONTENT = "io.containerd.content.v1.content"
    SNAPSHOTS = "io.containerd.snapshotter.v1.native"

    def snapshot_sizes(self):
        """{snapshot number: bytes} of the native snapshotter's directories, in creation order: the
        unpacked layers, then each container's writable copy (native copies the whole parent)."""
        d = os.path.join(self.root, self.SNAPSHOTS, "snapshots")
        names = sorted((n for n in os.listdir(d) if n.isdigit()), key=int) if os.path.isdir(d) else []
        return {int(n): self.disk_usage(os.path.join(self.SNAPSHOTS, "snapshots", n)) for n in names}

    def disk_usage(self, part=""):
        """Bytes under containerd's root (du -sb), or under one `part` of it (CONTENT: the blobs as
        pulled; SNAPSHOTS: the unpacked layers)."""
        path = os.path.join(self.root, part)
        if not os.path.exists(path):
            return 0
        out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    # -- teardown
    def _node_processes(self):
        return processes_in(self.dir, self.socket)

    def _mounts(self):
        return mounts_under(self.dir)

    def close(self, raise_leftovers=True):
        """Stops everything this node started; raises Leftovers if anything survived the orderly steps."""
        problems = []
        if self.proc is not None and self.proc.poll() is None and self.channel is not None:
            for pod in self.pods:  # the orderly way first: kubelet's StopPodSandbox + RemovePodSandbox
                for call, req in (
                    ("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod.id)),
                    ("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id)),
                ):
                    try:
                        getattr(self.runtime, call)(req, timeout=20)
                    except grpc.RpcError as e:
                        problems.append(f"{call} {pod.id[:12]}: {e.code()} {e.details()}")
                        break
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and not stop_group(self.proc):
            problems.append("containerd ignored SIGTERM for 20 s; killed")
        # runc containers under this node's runc root (pods the orderly path did not end).
        leftover_containers = []
        for ns_root in sorted(os.listdir(self.runc_root)) if os.path.isdir(self.runc_root) else []:
            r = os.path.join(self.runc_root, ns_root)
            ids = subprocess.run(["runc", "--root", r, "list", "-q"], capture_output=True, text=True).stdout.split()
            for cid in ids:
                leftover_containers.append(f"runc container {cid[:12]} still there; deleted")
                subprocess.run(["runc", "--root", r, "delete", "-f", cid], capture_output=True)
        # Shims exit on their own once their tasks are deleted; a shim still alive here was leaked.
        leaked = leftover_containers + sweep(self.dir, self.socket)
        if raise_leftovers and leaked:
            raise Leftovers("the node left processes or mounts behind (now killed/unmounted): " + "; ".join(leaked + problems))


# --- what every pod test shares: the canary, the results the docs' table is filled from ------

RESULTS = os.environ.get("IMAGELET_POD_RESULTS")  # a JSON-lines file docs/runtimes.md's table is filled from


def record(**row):
    """One row of docs/runtimes.md's "What was run" (when IMAGELET_POD_RESULTS names a file)."""
    if RESULTS:
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def canary():
    with daemons.CanaryProxy() as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def nothing_goes_past_the_mirror(canary):
    """Every client gets the canary as its proxy: a request that leaves loopback (a fallback to the
    image's own registry) is refused there and fails the test. A module that imports this fixture
    gets it for every test; a test about such a fallback takes the canary's record itself."""
    canary.take()
    yield
    assert canary.take() == [], "a client went past imagelet's mirror to a registry"


# --- a stand-in mirror: Debian's distribution 2.8 -------------------------------------------

def stand_in_mirror(scope, layout, refs):
    """daemons.Distribution (docker-registry 2.8 on a loopback port), started, serving `refs` copied
    by skopeo from `layout` under the paths each client asks: containerd's `<repo>?ns=<registry>` (the
    repository without its registry) and the host-prefixed `<registry>/<repo>` CRI-O and podman send.
    Use it as a context manager; `.host` is its HOST:PORT."""
    registry = daemons.Distribution(str(scope)).start()
    try:
        for ref in refs:
            for dest in (ref.partition("/")[2], ref):
                subprocess.run(
                    ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{ref}", f"docker://{registry.host}/{dest}"],
                    check=True, capture_output=True,
                )
    except BaseException:
        registry.stop()
        raise
    return registry


# --- the runnable stores ---------------------------------------------------------------------

class RunnableStores:
    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "images.json")) as f:
            self.images = json.load(f)

    def path(self, kind):
        return os.path.join(self.dir, kind)

    def image_id(self, ref):
        return self.images[ref]["id"]

    def backend(self, kind, name=None):
        """The imagelet [[backend]] table that serves the `kind` store."""
        name = name or kind
        p = self.path(kind)
        table = {
            "oci-layout": ("oci-layout", p),
            "docker-archive": ("archives", p),
            "oci-archive": ("archives", p),
            "containers-storage": ("containers-storage", p),
            "containerd": ("containerd", os.path.join(p, "root")),
            "docker": ("docker", os.path.join(p, "root")),
        }
        kind_type, path = table[kind]
        return f'[[backend]]\ntype = "{kind_type}"\nname = "{name}"\npath = "{path}"\n'


def make_runnable_stores(directory, kinds=STORE_KINDS):
    t = time.perf_counter()
    subprocess.run([MAKE_RUNNABLE, directory, *kinds], check=True, capture_output=True, timeout=300)
    return RunnableStores(directory), time.perf_counter() - t


@pytest.fixture(scope="session")
def runnable_stores():
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("umoci", "skopeo", "containerd", "dockerd")):
        pytest.skip("the runnable stores need root, umoci, skopeo, containerd and docker.io")
    d = tempfile.mkdtemp(prefix="imagelet-runnable-")
    try:
        stores, seconds = make_runnable_stores(d)
        stores.seconds = seconds
        yield stores
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- registry clients: Docker and podman on temporary roots ----------------------------------

class Dockerd(daemons.Dockerd):
    """daemons.Dockerd (vfs, no iptables, no bridge, its own containerd) configured by `daemon_json`
    (what `imagelet mirror-config docker` prints), in a short scope of its own: its containerd's
    sockets live under the exec root, and a unix socket path has 108 bytes. stop() ends every process
    naming the scope; leftovers still found after that fail loudly."""

    def __init__(self, daemon_json, proxy_env=None):
        super().__init__(tempfile.mkdtemp(prefix="dk-"), proxy_env=proxy_env)
        with open(self.daemon_json, "w") as f:
            f.write(daemon_json)

    def start(self):
        become_subreaper()  # its containerd's shims daemonize: reaped by sweep()
        try:
            return super().start()
        except BaseException:
            self.stop(check=False)
            raise

    def stop(self, check=True):
        super().stop()
        leaked = sweep(self.scope)
        shutil.rmtree(self.scope, ignore_errors=True)
        if check and leaked:
            raise Leftovers("dockerd left processes or mounts behind (now killed/unmounted): " + "; ".join(leaked))

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)


class Podman:
    """podman as root on a temporary vfs store, with `registries_conf` (what `imagelet mirror-config
    crio` prints) as its only registries configuration. podman runs no daemon; its run root must
    be a short path (c/storage refuses one over 50 characters), so it gets its own temp dir."""

    def __init__(self, directory, registries_conf, env=None):
        self.dir = os.path.realpath(str(directory))
        os.makedirs(self.dir, exist_ok=True)
        self.run = tempfile.mkdtemp(prefix="pm-")
        conf = os.path.join(self.dir, "registries.conf")
        with open(conf, "w") as f:
            f.write(registries_conf)
        self.env = {**os.environ, **(env or {}), "CONTAINERS_REGISTRIES_CONF": conf, "CONTAINERS_CONF": os.path.join(self.dir, "containers.conf")}
        open(self.env["CONTAINERS_CONF"], "a").close()

    def __call__(self, *args, check=True, timeout=120):
        out = subprocess.run(
            ["podman", "--root", f"{self.dir}/root", "--runroot", self.run, "--storage-driver", "vfs",
             "--events-backend", "none", "--cgroup-manager", "cgroupfs", "--tmpdir", f"{self.dir}/tmp", *args],
            capture_output=True, text=True, env=self.env, timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {out.stderr.strip()}")
        return out

    def close(self):
        leaked = sweep(self.dir) + sweep(self.run)
        shutil.rmtree(self.run, ignore_errors=True)
        if leaked:
            raise Leftovers("podman left processes or mounts behind (now killed/unmounted): " + "; ".join(leaked))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
