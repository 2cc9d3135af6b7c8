"""The mirror under imagelet.service: the unit has no network, so a [mirror]
listen address cannot be served there until packaging/systemd/mirror.conf
opens loopback TCP, and nothing more. Run in an emulation of the unit's
sandbox built from the unit file and the drop-in (unit_sandbox.py); systemd's
IPAddressAllow=/IPAddressDeny= are checked as written (they need systemd's
cgroup BPF), everything else is run."""
import os
import socket
import subprocess
import sys
import time

import pytest

import conftest
import unit_sandbox
from conftest import BIN, EXAMPLES, oci_backend
from mirror_http import fetch, free_port
from test_packaging import units_for_this_host

SYSTEMD = os.path.join(conftest.ROOT, "packaging", "systemd")
SERVICE = os.path.join(SYSTEMD, "imagelet.service")
DROP_IN = os.path.join(SYSTEMD, "mirror.conf")
TOOLS_MANIFEST = "sha256:75dea14cbc8443f211a678610cad8c7876973d0eda5529b2cf837ff7b538de0f"

# Inside the sandbox: listen on loopback, print the port, answer one connection.
LISTENER = """
import socket, sys
try:
    s = socket.socket(socket.AF_INET)
    s.bind(("127.0.0.1", 0))
    s.listen()
except OSError as e:
    print("refused", e.errno, flush=True)
    sys.exit(0)
print("port", s.getsockname()[1], flush=True)
s.settimeout(5)
try:
    c, _ = s.accept()
    c.sendall(b"from the sandbox")
    c.close()
except socket.timeout:
    pass
"""


@pytest.fixture
def sandbox(workdir):
    unit_sandbox.skip_unless_possible()
    runtime_dir = os.path.join(workdir, "run")
    os.makedirs(runtime_dir, exist_ok=True)

    def wrap(program, drop_ins=()):
        return unit_sandbox.wrapper(SERVICE, program, workdir, runtime_dir, drop_ins=drop_ins)

    return wrap


def listen_in_sandbox(wrapped_python):
    """Runs LISTENER in the sandbox; returns what the host got from it: 'refused <errno>',
    the bytes it read from the sandbox's port, or the host's connection error."""
    p = subprocess.Popen([wrapped_python, "-c", LISTENER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline().split()
        if not first or first[0] != "port":
            p.wait(timeout=10)
            return " ".join(first) or p.stderr.read()
        try:
            with socket.create_connection(("127.0.0.1", int(first[1])), timeout=2) as c:
                return c.recv(100)
        except OSError as e:
            return type(e).__name__
    finally:
        p.kill()
        p.wait()


def test_the_drop_in_is_the_whole_opening():
    drop_in = unit_sandbox.parse_unit(DROP_IN)
    assert drop_in == {"Service": {
        "PrivateNetwork": ["no"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6"],
        "IPAddressAllow": ["localhost"],
    }}
    unit = unit_sandbox.service_with_drop_ins(SERVICE)
    merged = unit_sandbox.service_with_drop_ins(SERVICE, [DROP_IN])
    # Families are added to the unit's AF_UNIX; every address but loopback is still dropped.
    assert unit_sandbox.address_families(unit) == ["AF_UNIX"]
    assert unit_sandbox.address_families(merged) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert merged["IPAddressDeny"] == ["any"] and merged["IPAddressAllow"] == ["localhost"]
    # Nothing else moves: capabilities, file system, system calls are the unit's.
    changed = {k for k in merged if merged[k] != unit.get(k)}
    assert changed == {"PrivateNetwork", "RestrictAddressFamilies", "IPAddressAllow"}


def verify_with_drop_ins(units):
    """systemd-analyze verify of the units, with their directory on the unit path so that
    imagelet.service.d/ beside them is read as the installed drop-in directory would be."""
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", "imagelet.service", "imagelet.socket"], cwd=units,
                       capture_output=True, text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": units + ":"})
    return r.returncode, (r.stdout + r.stderr).strip()


def test_the_unit_with_the_drop_in_passes_systemd_analyze_verify(workdir):
    units = units_for_this_host(os.path.join(workdir, "units"))
    drop_ins = os.path.join(units, "imagelet.service.d")
    os.makedirs(drop_ins)
    with open(DROP_IN) as src, open(os.path.join(drop_ins, "mirror.conf"), "w") as dst:
        dst.write(src.read())
    assert verify_with_drop_ins(units) == (0, "")
    # The drop-in is read: a mistake in it is reported.
    with open(os.path.join(drop_ins, "mirror.conf"), "a") as f:
        f.write("IPAddressAlow=localhost\n")
    assert "Unknown key 'IPAddressAlow'" in verify_with_drop_ins(units)[1]


def test_each_line_of_the_drop_in_is_needed(sandbox, workdir):
    python = sys.executable
    # The unit alone: no IPv4 socket at all.
    assert listen_in_sandbox(sandbox(python)) == "refused 97"  # EAFNOSUPPORT
    # The families without PrivateNetwork=no: a loopback of the sandbox's own, which the host cannot reach.
    families_only = os.path.join(workdir, "families-only.conf")
    with open(families_only, "w") as f:
        f.write("[Service]\nRestrictAddressFamilies=AF_INET AF_INET6\nIPAddressAllow=localhost\n")
    assert listen_in_sandbox(sandbox(python, [families_only])) == "ConnectionRefusedError"
    # PrivateNetwork=no alone: the host's network, still no IPv4 socket.
    network_only = os.path.join(workdir, "network-only.conf")
    with open(network_only, "w") as f:
        f.write("[Service]\nPrivateNetwork=no\n")
    assert listen_in_sandbox(sandbox(python, [network_only])) == "refused 97"
    # The drop-in: the host reaches the sandbox on loopback.
    assert listen_in_sandbox(sandbox(python, [DROP_IN])) == b"from the sandbox"


def start_alone(wrapped_bin, config_text, workdir):
    """imagelet in the sandbox without the drop-in. Returns (its exit code, or None when it
    was still serving the CRI socket, and its log)."""
    config = os.path.join(workdir, "alone.toml")
    with open(config, "w") as f:
        f.write(f'socket = "{os.path.join(workdir, "run", "imagelet.sock")}"\n' + config_text)
    log_path = os.path.join(workdir, "alone.log")
    with open(log_path, "w") as log:
        p = subprocess.Popen([wrapped_bin, "serve", "--config", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while p.poll() is None and time.monotonic() < deadline:
            with open(log_path) as f:
                if "serving CRI ImageService" in f.read():
                    break
            time.sleep(0.05)
        with open(log_path) as f:
            return p.poll(), f.read()
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=15)


def test_the_mirror_answers_on_loopback_only_with_the_drop_in(sandbox, serve, monkeypatch, workdir):
    port = free_port()
    config = f'[mirror]\nlisten = "127.0.0.1:{port}"\n' + oci_backend(os.path.join(EXAMPLES, "sample-oci"))
    # Without the drop-in: the mirror cannot listen, imagelet stops, and says where and why.
    code, log = start_alone(sandbox(BIN), config, workdir)
    # Exit code 2, a configuration error: the unit (RestartPreventExitStatus=2) does not restart it every 2 s.
    assert code == 2 and f'listen = "127.0.0.1:{port}": cannot listen: EAFNOSUPPORT' in log, log
    assert fetch(port, "/v2/", timeout=5).error.startswith("ConnectionRefusedError")
    # With it: the mirror answers the host on loopback, beside the CRI socket.
    monkeypatch.setattr(conftest, "BIN", sandbox(BIN, [DROP_IN]))
    s = serve(config)
    assert fetch(port, "/v2/", timeout=5).status == 200
    got = fetch(port, "/v2/library/edge-tools/manifests/2.0?ns=docker.io", timeout=5)
    assert (got.status, got.headers["docker-content-digest"], got.digest) == (200, TOOLS_MANIFEST, TOOLS_MANIFEST)
    assert s.image_status("edge-tools:2.0").HasField("image")
