"""packaging/: the systemd units and the example config, checked by systemd's
own parser and by running the compiled binary in the unit's sandbox."""
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

import conftest
import unit_sandbox
from conftest import BIN, EXAMPLES, ROOT, run_cli

PACKAGING = os.path.join(ROOT, "packaging")
SERVICE = os.path.join(PACKAGING, "systemd", "imagelet.service")
SOCKET = os.path.join(PACKAGING, "systemd", "imagelet.socket")
CONFIG = os.path.join(PACKAGING, "config.toml")
INSTALLED_BIN = "/usr/local/bin/imagelet"
HELLO_ID = "sha256:1dd76ae2e114a42c9432c3e8d712b19a773ff7555570e3d1efaeb74fbd66b271"
TOOLS_ID = "sha256:6470921982b6a2c48b1d039d6fd7d57b8e4545b596472e2c425a842650605806"


def analyze_verify(unit_dir):
    """systemd-analyze verify on every unit in unit_dir: its complaints (unknown
    keys, bad values, a missing binary) go to stderr with exit code 0."""
    units = sorted(os.path.join(unit_dir, u) for u in os.listdir(unit_dir))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, cwd=unit_dir)
    return r.returncode, (r.stdout + r.stderr).strip()


def units_for_this_host(dest):
    """Copies of the units whose ExecStart runs the binary under test (verify
    checks that the executable exists, and /usr/local/bin is the device's)."""
    os.makedirs(dest)
    for src in (SERVICE, SOCKET):
        with open(src) as f:
            text = f.read()
        with open(os.path.join(dest, os.path.basename(src)), "w") as f:
            f.write(text.replace(INSTALLED_BIN, BIN))
    return dest


def test_units_pass_systemd_analyze_verify(workdir):
    units = units_for_this_host(os.path.join(workdir, "units"))
    assert analyze_verify(units) == (0, "")
    # The check sees mistakes: a misspelled key and an invalid value are reported.
    with open(os.path.join(units, "imagelet.service"), "a") as f:
        f.write("[Service]\nProtectHomes=yes\nRestart=sometimes\n")
    rc, out = analyze_verify(units)
    assert "Unknown key 'ProtectHomes'" in out and "sometimes" in out, out


def test_units_and_config_agree():
    service = unit_sandbox.parse_unit(SERVICE)
    socket = unit_sandbox.parse_unit(SOCKET)
    exec_start = service["Service"]["ExecStart"][0].split()
    assert exec_start[:2] == [INSTALLED_BIN, "serve"]
    assert service["Unit"]["Before"] == ["kubelet.service"]
    assert service["Service"]["Restart"] == ["on-failure"]
    # systemctl reload is imagelet's SIGHUP reload.
    assert service["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Install"]["WantedBy"] == ["multi-user.target"]
    # The socket systemd listens on is the one the config and the binary's default name,
    # inside the service's runtime directory, which outlives a stop (the socket is in it).
    listen = socket["Socket"]["ListenStream"]
    assert listen == ["/run/imagelet/imagelet.sock"]
    assert os.path.dirname(listen[0]) == "/run/" + service["Service"]["RuntimeDirectory"][0]
    assert service["Service"]["RuntimeDirectoryPreserve"] == ["yes"]
    assert socket["Socket"]["SocketMode"] == ["0660"]
    with open(CONFIG) as f:
        assert f'socket = "{listen[0]}"' in f.read()
    # No network, and a file system it can only read.
    assert service["Service"]["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert service["Service"]["IPAddressDeny"] == ["any"]
    assert service["Service"]["ProtectSystem"] == ["strict"]
    assert "ReadWritePaths" not in service["Service"]


def test_example_config_is_accepted_by_the_binary():
    out = run_cli("plugins", "-o", "json", "--config", CONFIG)
    assert out.returncode == 0, out.stderr
    import json

    backends = json.loads(out.stdout)["backends"]
    assert [(b["name"], b["type"]) for b in backends] == [("archives", "archives")]


@pytest.fixture
def sandbox_host(workdir):
    unit_sandbox.skip_unless_possible()
    # A store root may read only through CAP_DAC_READ_SEARCH: owned by another user, private.
    store = os.path.join(workdir, "store")
    shutil.copytree(os.path.join(EXAMPLES, "sample-oci"), store)
    for d, dirs, files in os.walk(store):
        os.chown(d, 1000, 1000)
        os.chmod(d, 0o700)
        for name in files:
            os.chown(os.path.join(d, name), 1000, 1000)
            os.chmod(os.path.join(d, name), 0o600)
    runtime_dir = os.path.join(workdir, "run")
    os.makedirs(runtime_dir)
    return store, runtime_dir


def test_service_sandbox_serves_a_store_it_may_only_read(workdir, serve, monkeypatch, sandbox_host):
    store, runtime_dir = sandbox_host
    # The sandbox is real: the store is read-only inside it.
    touch = unit_sandbox.wrapper(SERVICE, shutil.which("touch"), workdir, runtime_dir, read_only=[store])
    r = subprocess.run([touch, os.path.join(store, "written")], capture_output=True, text=True)
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r
    monkeypatch.setattr(conftest, "BIN", unit_sandbox.wrapper(SERVICE, BIN, workdir, runtime_dir, read_only=[store]))

    s = serve(f'socket_group = "65534"\n[[backend]]\ntype = "oci-layout"\npath = "{store}"\n')
    assert sorted(i.id for i in s.list_images()) == [HELLO_ID, TOOLS_ID]
    st = os.stat(s.socket)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 65534)  # socket_group needs CAP_CHOWN
    assert "level=error" not in s.log() and "level=warn" not in s.log(), s.log()
    assert s.stop() == 0
    assert not os.path.exists(s.socket)


def test_service_sandbox_without_dac_read_search_cannot_read_the_store(workdir, monkeypatch, sandbox_host):
    # The negative control for the test above: the capability is what reads the store.
    store, runtime_dir = sandbox_host
    with open(os.path.join(workdir, "store.toml"), "w") as f:
        f.write(f'[[backend]]\ntype = "oci-layout"\npath = "{store}"\n')
    for drop, expected in (((), [TOOLS_ID, HELLO_ID]), (("CAP_DAC_READ_SEARCH",), [])):
        monkeypatch.setattr(
            conftest, "BIN", unit_sandbox.wrapper(SERVICE, BIN, workdir, runtime_dir, read_only=[store], drop_caps=drop)
        )
        out = run_cli("images", "-q", "--config", os.path.join(workdir, "store.toml"))
        assert out.stdout.split() == expected, (drop, out.stderr)


def test_service_sandbox_loads_plugins_and_reloads_on_sighup(workdir, serve, monkeypatch, sandbox_host):
    # Plugins run under the unit's rules: a read-only file system (Bun cannot
    # write a transpiler cache), no network; the reload is the unit's ExecReload signal.
    store, runtime_dir = sandbox_host
    plugins = os.path.join(workdir, "plugins")
    shutil.copytree(os.path.join(ROOT, "plugins", "catalog"), os.path.join(plugins, "catalog"), symlinks=False)
    os.makedirs(os.path.join(plugins, "exec"))
    shutil.copy(os.path.join(ROOT, "plugins", "exec-catalog", "imagelet-catalog.sh"), os.path.join(plugins, "exec"))
    catalog = os.path.join(plugins, "catalog", "example", "catalog.toml")
    exec_catalog = os.path.join(workdir, "exec-catalog.json")
    with open(exec_catalog, "w") as f:
        f.write('[{"id": "sha256:%s", "repoTags": ["vendor.example/edge/exec:1"], "repoDigests": [], "size": 3, "kind": "oci"}]' % ("ab" * 32))
    monkeypatch.setattr(conftest, "BIN", unit_sandbox.wrapper(SERVICE, BIN, workdir, runtime_dir, read_only=[store]))
    config = (
        f'plugin_dir = "{plugins}"\n[[backend]]\ntype = "catalog"\npath = "{catalog}"\n'
        f'[[backend]]\ntype = "exec"\nname = "agent"\npath = "imagelet-catalog.sh"\nargs = ["{exec_catalog}"]\n'
    )
    s = serve(config)
    assert len(s.list_images()) == 3  # two from the catalog, one from the exec plugin
    with open(s.config, "a") as f:
        f.write(f'[[backend]]\ntype = "oci-layout"\npath = "{store}"\n')
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while 'msg="reloaded"' not in s.log() and time.time() < deadline:
        time.sleep(0.05)
    assert {HELLO_ID, TOOLS_ID} <= {i.id for i in s.list_images()}
    assert len(s.list_images()) == 5
    assert "level=error" not in s.log() and "level=warn" not in s.log(), s.log()
