"""Daemons a test starts and must leave nothing of: registries, containerd, dockerd.

Every daemon runs in its own session (its own process group) with all its state
under one scope directory that only it uses. stop() signals the group, then
kills any process still naming the scope directory on its command line: a
daemon's own helpers leave the group (dockerd starts its containerd with
setsid; a containerd shim daemonizes), but they all carry the scope path in
their arguments. A fresh temp dir as the scope is what makes that safe: nothing
else on the machine can name it.

Also here: CanaryProxy, an HTTP(S) proxy that refuses every request and
records it, given to clients as HTTP_PROXY/HTTPS_PROXY so a client that goes
past the loopback mirror to a real registry fails the test instead of reaching
the network (Go's proxy rule never proxies loopback, so the mirror itself is
reached directly)."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts"))
import bench_containerd  # noqa: E402

# Debian's docker CLI, named by path: another docker may come first on PATH.
DOCKER_CLI = "/usr/bin/docker"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout, what, log=None):
    """Polls check() until it returns a true value (which is returned); raises naming `what` and the log tail."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = ""
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    tail = f.read()[-3000:]
            raise AssertionError(f"{what}: not within {timeout} s\n{tail}")
        time.sleep(0.05)


def http_status(url, timeout=2):
    """The status of a GET, or None when nothing answers. No proxy: the target is loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def pids_naming(path):
    """Processes whose command line contains `path`."""
    needle = path.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_scope(scope, grace=5.0):
    """SIGTERM, then SIGKILL, every process naming `scope`; returns the pids that had to be killed."""
    pids = pids_naming(scope)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
    return pids


class Daemon:
    """argv started in its own session, output to <scope>/<name>.log."""

    name = "daemon"

    def __init__(self, scope):
        self.scope = os.path.abspath(scope)
        os.makedirs(self.scope, exist_ok=True)
        self.log_path = os.path.join(self.scope, f"{self.name}.log")
        self.proc = None

    def argv(self):
        raise NotImplementedError

    def env(self):
        return None

    def start(self):
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(), start_new_session=True,
            )
        return self

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check, timeout, what):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            return check()

        return wait_for(ready, timeout, f"{self.name}: {what}", self.log_path)

    def stop(self, grace=10.0):
        """Ends the daemon and everything it started; safe to call twice."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        kill_scope(self.scope)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Distribution(Daemon):
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1:<free port>, storage under the scope."""

    name = "docker-registry"

    def __init__(self, scope):
        super().__init__(scope)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = os.path.join(self.scope, "registry.yml")
        with open(self.config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {os.path.join(self.scope, 'storage')}\n"
                f"http:\n  addr: {self.host}\n"
            )

    def argv(self):
        return ["docker-registry", "serve", self.config]

    def start(self):
        super().start()
        self.wait_ready(lambda: http_status(f"http://{self.host}/v2/") == 200, 20, "GET /v2/")
        return self


class Containerd(Daemon):
    """Debian's containerd as scripts/bench_containerd.py configures it (CRI plugin on, native
    snapshotter), here in its own session, with CRI's registry hosts read from `hosts_dir`
    (hosts.toml files can change between pulls: containerd reads them per pull) and, when
    `isolated`, content not shared between namespaces, so every namespace's pull fetches
    every blob itself."""

    name = "containerd"

    def __init__(self, scope, root=None, hosts_dir=None, isolated=False, proxy_env=None):
        super().__init__(scope)
        self.socket = os.path.join(self.scope, "containerd.sock")
        self.config = os.path.join(self.scope, "config.toml")
        self.proxy_env = proxy_env or {}
        text = bench_containerd.CONFIG.format(
            root=root or os.path.join(self.scope, "root"), state=os.path.join(self.scope, "state"), sock=self.socket
        )
        if hosts_dir:
            text += f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{hosts_dir}"\n'
        if isolated:
            text += '[plugins."io.containerd.metadata.v1.bolt"]\n  content_sharing_policy = "isolated"\n'
        with open(self.config, "w") as f:
            f.write(text)

    def argv(self):
        return ["containerd", "--config", self.config]

    def env(self):
        return {**os.environ, **self.proxy_env}

    def start(self):
        super().start()
        self.wait_ready(lambda: os.path.exists(self.socket), 30, "socket")
        return self

    def ctr(self, *args, namespace="k8s.io", timeout=60, env=None, check=True):
        """Runs ctr against this containerd: its stdout, or with check=False the CompletedProcess."""
        out = subprocess.run(
            ["ctr", "--address", self.socket, "--namespace", namespace, *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        )
        if not check:
            return out
        assert out.returncode == 0, f"ctr {' '.join(args)}: {out.stderr.strip()}"
        return out.stdout


class Dockerd(Daemon):
    """Debian's dockerd on its own data root, exec root, pidfile and socket, vfs storage, no
    iptables and no bridge, with the private containerd it starts itself (under the exec root,
    hence in the scope). An empty --config-file keeps the machine's /etc/docker/daemon.json out."""

    name = "dockerd"

    def __init__(self, scope, mirrors=(), proxy_env=None):
        super().__init__(scope)
        self.socket = os.path.join(self.scope, "docker.sock")
        self.daemon_json = os.path.join(self.scope, "daemon.json")
        self.mirrors = list(mirrors)
        self.proxy_env = proxy_env or {}
        with open(self.daemon_json, "w") as f:
            f.write("{}\n")

    def argv(self):
        s = self.scope
        return [
            "dockerd", "--config-file", self.daemon_json,
            "--data-root", os.path.join(s, "data"), "--exec-root", os.path.join(s, "exec"),
            "--pidfile", os.path.join(s, "docker.pid"), "-H", f"unix://{self.socket}",
            "--storage-driver=vfs", "--iptables=false", "--bridge=none",
            *(f"--registry-mirror={m}" for m in self.mirrors),
        ]

    def env(self):
        return {**os.environ, **self.proxy_env}

    def start(self):
        super().start()
        self.wait_ready(lambda: self.docker("version", timeout=10).returncode == 0, 60, "docker version")
        return self

    def docker(self, *args, timeout=60):
        return subprocess.run(
            [DOCKER_CLI, "-H", f"unix://{self.socket}", *args], capture_output=True, text=True, timeout=timeout
        )


class CanaryProxy:
    """A loopback HTTP proxy that answers every request with 403 and records its request line
    (`CONNECT registry-1.docker.io:443 HTTP/1.1`). `env` is what to give a client."""

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.env = {
            "HTTP_PROXY": self.url, "HTTPS_PROXY": self.url, "http_proxy": self.url, "https_proxy": self.url,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        }
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\n" not in data and len(data) < 8192:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                with self._lock:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace") or "<no request line>")
                try:
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def take(self):
        """The requests recorded since the last take()."""
        with self._lock:
            got, self.requests = self.requests, []
        return got

    def close(self):
        self._closed = True
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
