"""`imagelet config`, `imagelet config --check`, and what imagelet says when it
finds nothing to serve, on the compiled binary.

The runs without a config file see the machine's /etc/imagelet and /var/lib:
they run in a private mount namespace (unshare -m, as root) with an empty
tmpfs over /var/lib (and /etc/imagelet when it exists), where the test puts
the well-known store it wants. The host's directories are never written.
"""
import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from conftest import BIN, EXAMPLES, FIXTURES, run_cli

SAMPLE_OCI = os.path.join(EXAMPLES, "sample-oci")
ARCHIVES = os.path.join(FIXTURES, "archives", "store")
WELL_KNOWN = ["/var/lib/imagelet/oci", "/var/lib/imagelet/archives", "/var/lib/containers/storage", "/var/lib/docker", "/var/lib/isulad"]


def full_config(socket):
    """Every top-level key away from its default, and two backends."""
    return f"""socket = "{socket}"
log_level = "debug"
backend_timeout = "1500ms"
poll_interval = "3s"
fs_info_interval = "2m"
handshake_timeout = "5s"
idle_timeout = "90s"
keepalive_time = "30s"
keepalive_timeout = "10s"

[[backend]]
type = "oci-layout"
name = "sample"
path = "{SAMPLE_OCI}"
repository = "localhost/sample"

[[backend]]
type = "archives"
path = "{ARCHIVES}"
timeout = "3s"
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def body(toml_text):
    """The TOML without its header comments, which name the file it was read from."""
    return [l for l in toml_text.splitlines() if not l.startswith("# imagelet:") and not l.startswith("# Read from")]


class Serving:
    """`imagelet serve --config FILE` until stopped; the socket is the file's."""

    def __init__(self, config, socket, log):
        self.socket = socket
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([BIN, "serve", "--config", config], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while "serving CRI ImageService" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.time() < deadline, self.log()
            time.sleep(0.05)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def cli(self, *args):
        out = run_cli(*args, "--endpoint", f"unix://{self.socket}")
        assert out.returncode == 0, out.stderr
        return out.stdout

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self._log.close()


def live_state(server):
    """What a running imagelet serves: its backends (without timestamps) and its images."""
    backends = json.loads(server.cli("plugins", "-o", "json"))
    for b in backends["backends"]:
        b.pop("lastSuccessAt", None)
    return backends, json.loads(server.cli("images", "-o", "json"))


def test_saved_config_starts_the_same_backends(tmp_path):
    socket = str(tmp_path / "run" / "imagelet.sock")
    original = write(tmp_path / "original.toml", full_config(socket))
    dumped = run_cli("config", "--config", str(original))
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stderr == ""
    text = dumped.stdout
    # Defaults filled in, the given values as given.
    assert 'backend_timeout = "1500ms"\n' in text and 'fs_info_interval = "2m"\n' in text
    assert '# socket_group = ...   (unset)\n' in text
    assert '[[backend]]\ntype = "archives"\nname = "archives"\ntimeout = "3s"\n' in text

    # Saved elsewhere and read back, it prints itself again...
    (tmp_path / "elsewhere").mkdir()
    saved = write(tmp_path / "elsewhere" / "saved.toml", text)
    again = run_cli("config", "--config", str(saved))
    assert again.returncode == 0, again.stderr
    assert body(again.stdout) == body(text)
    assert run_cli("config", "--check", str(saved)).stdout == f"{saved}: ok, 2 backends\n"

    # ...and serving it starts the same backends, with the same images, as serving the original.
    states = []
    for config in (original, saved):
        server = Serving(str(config), socket, str(tmp_path / f"{os.path.basename(config)}.log"))
        try:
            states.append(live_state(server))
        finally:
            server.stop()
    assert states[0] == states[1]
    backends, images = states[0]
    assert [(b["name"], b["type"], b["state"]) for b in backends["backends"]] == [("sample", "oci-layout", "ok"), ("archives", "archives", "ok")]
    assert all(b["images"] > 0 for b in backends["backends"]) and len(images["images"]) > 2


@pytest.mark.parametrize(
    "text, message",
    [
        ('poll_interval = 5\n', 'poll_interval: expected a duration such as "500ms" or "2s", got 5'),
        ('[[backend]]\ntype = "oci-layout"\npaht = "/x"\n', 'backend[0].paht: unknown key for backend type "oci-layout"'),
        # Refused by the backend's create() (OptionError), not by the schema: --check runs create() too.
        ('[[backend]]\ntype = "docker"\npath = "/nonexistent"\ndriver = "../x"\n', 'backend[0].driver: driver "../x" is not a storage driver name'),
    ],
)
def test_check_gives_the_error_serve_gives(tmp_path, text, message):
    config = write(tmp_path / "bad.toml", f'socket = "{tmp_path}/s.sock"\n' + text)
    check = run_cli("config", "--check", str(config))
    serve = subprocess.run([BIN, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert (check.returncode, serve.returncode) == (2, 2)
    assert check.stderr == serve.stderr == f"imagelet: config error: {config}: {message}\n"
    assert check.stdout == ""
    assert not os.path.exists(tmp_path / "s.sock")


def test_check_accepts_a_good_file_without_starting_anything(tmp_path):
    config = write(tmp_path / "good.toml", full_config(str(tmp_path / "s.sock")))
    out = run_cli("config", "--check", "--config", str(config))
    assert (out.returncode, out.stdout, out.stderr) == (0, f"{config}: ok, 2 backends\n", "")
    assert not os.path.exists(tmp_path / "s.sock")


def without_config(tmp_path, script, stores=()):
    """Runs `script` (sh, $BIN is the binary) where no config file exists and only `stores`
    (well-known path → directory copied there) are present."""
    hidden = os.path.exists("/etc/imagelet") or any(os.path.exists(p) for p in WELL_KNOWN)
    if not stores and not hidden:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, env={**os.environ, "BIN": BIN}, cwd=tmp_path)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"hiding this machine's stores needs a mount namespace: unshare -m failed: {probe.stderr.strip()}")
    setup = ["mount -t tmpfs tmpfs /var/lib"]
    if os.path.exists("/etc/imagelet"):
        setup.append("mount -t tmpfs tmpfs /etc/imagelet")
    for path, source in stores:
        setup.append(f"mkdir -p {shlex.quote(os.path.dirname(path))} && cp -r {shlex.quote(source)} {shlex.quote(path)}")
    inner = " && ".join(setup) + " && " + script
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
        capture_output=True, text=True, timeout=60, env={**os.environ, "BIN": BIN}, cwd=tmp_path,
    )


def test_nothing_found_is_said_once_on_stderr(tmp_path):
    out = without_config(tmp_path, '"$BIN" images')
    assert out.returncode == 0
    assert out.stdout == "IMAGE   TAG   IMAGE ID   SIZE\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    for place in ["/etc/imagelet/config.toml", *WELL_KNOWN, "--config"]:
        assert place in lines[0]
    assert lines[0].startswith("imagelet: nothing to serve: ")


def test_nothing_found_is_logged_once_by_serve(tmp_path):
    # serve runs until SIGTERM: started in the background, stopped once it serves.
    script = (
        '"$BIN" serve --socket "$PWD/s.sock" > serve.log 2>&1 & pid=$!; '
        'for i in $(seq 200); do grep -q "serving CRI" serve.log && break; sleep 0.05; done; '
        'kill -TERM $pid; wait $pid; cat serve.log'
    )
    out = without_config(tmp_path, script)
    assert "serving CRI ImageService" in out.stdout, out.stdout + out.stderr
    nothing = [l for l in out.stdout.splitlines() if "nothing to serve" in l]
    assert len(nothing) == 1 and "level=warn" in nothing[0] and "--config" in nothing[0], out.stdout


def test_without_a_file_config_prints_the_stores_found_and_they_read_back(tmp_path):
    script = (
        '"$BIN" config > found.toml && "$BIN" config --check found.toml && '
        '"$BIN" images -o json > images-default.json && "$BIN" images -o json --config found.toml > images-saved.json && '
        '"$BIN" plugins -o json > plugins-default.json && "$BIN" plugins -o json --config found.toml > plugins-saved.json'
    )
    out = without_config(tmp_path, script, stores=[("/var/lib/imagelet/oci", SAMPLE_OCI), ("/var/lib/imagelet/archives", ARCHIVES)])
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{tmp_path}/found.toml: ok, 2 backends\n"
    found = (tmp_path / "found.toml").read_text()
    assert "No config file" in found
    assert '[[backend]]\ntype = "oci-layout"\nname = "imagelet-oci"\npath = "/var/lib/imagelet/oci"\n' in found
    assert '[[backend]]\ntype = "archives"\nname = "imagelet-archives"\npath = "/var/lib/imagelet/archives"\n' in found
    assert "/var/lib/docker" not in found.split("\n\n", 1)[1]

    def load(name):
        data = json.loads((tmp_path / name).read_text())
        for b in data.get("backends", []):
            b.pop("lastSuccessAt", None)
        return data

    assert load("images-default.json") == load("images-saved.json")
    assert len(load("images-default.json")["images"]) > 2
    assert load("plugins-default.json") == load("plugins-saved.json")
    assert [b["name"] for b in load("plugins-saved.json")["backends"]] == ["imagelet-oci", "imagelet-archives"]
