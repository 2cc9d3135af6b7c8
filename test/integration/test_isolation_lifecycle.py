"""Backend isolation and socket lifecycle, through the compiled binary."""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

import grpc
import pytest

from conftest import BIN, EXAMPLES, FIXTURES, Server, oci_backend, run_cli

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")

# A backend plugin (the same contract as the built-ins) that fails on purpose.
FAULTY_PLUGIN = """
export default {
  name: "faulty",
  apiVersion: 1,
  options: { mode: { type: "string", required: true } },
  create(options) {
    return {
      list() {
        if (options.mode === "throw") throw new Error("faulty plugin exploded");
        if (options.mode === "reject") return Promise.reject(new Error("faulty plugin rejected"));
        if (options.mode === "hang") return new Promise(() => {});
        if (options.mode === "garbage") return [{ id: "not-an-id", size: -1 }];
        return [];
      },
    };
  },
};
"""


def plugin_dir(workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d, mode=0o755)
    path = os.path.join(d, "faulty.ts")
    with open(path, "w") as f:
        f.write(FAULTY_PLUGIN)
    os.chmod(path, 0o644)
    return d


def faulty(mode, timeout=None):
    text = f'[[backend]]\ntype = "faulty"\nname = "faulty-{mode}"\nmode = "{mode}"\n'
    return text + (f'timeout = "{timeout}"\n' if timeout else "")


@pytest.mark.parametrize("mode", ["throw", "reject", "hang", "garbage"])
def test_failing_backend_does_not_hide_the_others(serve, workdir, mode):
    plugins = plugin_dir(workdir)
    started = time.time()
    s = serve(f'plugin_dir = "{plugins}"\n' + faulty(mode, timeout="300ms") + SAMPLE)
    # A hung backend delays start-up by at most its timeout.
    assert time.time() - started < 10
    tags = sorted(t for i in s.list_images() for t in i.repo_tags)
    assert tags == ["docker.io/library/edge-tools:2.0", "example.com/edge/hello:1.0", "example.com/edge/hello:latest"]
    assert s.image_status("edge-tools:2.0").HasField("image")
    log = s.log()
    assert f"backend=faulty-{mode}" in log and "level=error" in log
    # `imagelet plugins` shows the failing backend with its error, and the healthy one.
    out = run_cli("plugins", "--config", s.config)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "failing" in rows[f"faulty-{mode}"]
    assert {"throw": "exploded", "reject": "rejected", "hang": "timed out", "garbage": "record 0"}[mode] in rows[f"faulty-{mode}"]
    assert " ok " in rows["sample"]


def test_corrupt_store_next_to_a_healthy_one(serve, workdir):
    broken = os.path.join(workdir, "broken")
    shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), broken)
    with open(os.path.join(broken, "index.json"), "w") as f:
        f.write('{"schemaVersion": 2, "manif')
    s = serve(oci_backend(broken, name="broken") + SAMPLE)
    assert len(s.list_images()) == 2
    assert f"path={os.path.join(broken, 'index.json')}" in s.log() or os.path.join(broken, "index.json") in s.log()


def test_json_plugin_list_shows_health(serve, workdir):
    plugins = plugin_dir(workdir)
    s = serve(f'plugin_dir = "{plugins}"\n' + faulty("throw") + SAMPLE)
    out = run_cli("plugins", "--config", s.config, "-o", "json")
    backends = {b["name"]: b for b in json.loads(out.stdout)["backends"]}
    assert backends["sample"]["state"] == "ok" and backends["sample"]["images"] == 2
    assert backends["faulty-throw"]["state"] == "failing"


# --- socket lifecycle -----------------------------------------------------------


def test_socket_is_0660_in_a_created_directory_and_sigterm_removes_it(serve):
    s = serve(SAMPLE)
    st = os.stat(s.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert os.path.isdir(os.path.dirname(s.socket))
    assert s.stop(signal.SIGTERM) == 0
    assert not os.path.exists(s.socket)
    assert "stopped" in s.log()


def test_sigint_also_stops_cleanly(serve):
    s = serve(SAMPLE)
    assert s.stop(signal.SIGINT) == 0
    assert not os.path.exists(s.socket)


SLOW_PLUGIN = """
// Lists one image without its config; status() (used for verbose detail) is slow.
const ID = "sha256:" + "5".repeat(64);
export default {
  name: "slow",
  apiVersion: 1,
  options: {},
  create() {
    return {
      list: () => [{ id: ID, repoTags: ["slow:1"], repoDigests: [], size: 42, kind: "oci" }],
      status: (id) => new Promise((r) => setTimeout(() => r({ id, repoTags: [], repoDigests: [], size: 42, kind: "oci", config: { slow: true } }), 1500)),
    };
  },
};
"""


def test_sigterm_finishes_in_flight_calls(serve, workdir):
    plugins = plugin_dir(workdir)
    with open(os.path.join(plugins, "slow.ts"), "w") as f:
        f.write(SLOW_PLUGIN)
    s = serve(f'plugin_dir = "{plugins}"\n[[backend]]\ntype = "slow"\n')
    future = s.stub.ImageStatus.future(
        s.pb.ImageStatusRequest(image=s.pb.ImageSpec(image="slow:1"), verbose=True), timeout=20
    )
    time.sleep(0.5)  # the call is now waiting on the slow status() hook
    assert not future.done()
    s.proc.send_signal(signal.SIGTERM)
    response = future.result()  # raises if the call was cut off
    assert json.loads(response.info["info"])["imageSpec"] == {"slow": True}
    assert s.proc.wait(timeout=15) == 0
    assert not os.path.exists(s.socket)
    log = s.log()
    assert log.index("finishing in-flight calls") < log.index("stopped")


def test_stale_socket_file_is_removed(serve, workdir):
    path = os.path.join(workdir, "run", "imagelet.sock")
    os.makedirs(os.path.dirname(path))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    assert os.path.exists(path)
    s = serve(SAMPLE)
    assert "removing stale socket" in s.log()
    assert len(s.list_images()) == 2


def test_second_instance_is_refused_and_first_keeps_serving(serve, workdir):
    first = serve(SAMPLE)
    second = subprocess.run(
        [BIN, "serve", "--config", first.config], capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 1
    assert "another process is listening" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert len(first.list_images()) == 2
    assert os.path.exists(first.socket)


def test_refuses_to_replace_a_non_socket_file(workdir):
    path = os.path.join(workdir, "not-a-socket")
    with open(path, "w") as f:
        f.write("precious")
    cfg = os.path.join(workdir, "c.toml")
    with open(cfg, "w") as f:
        f.write(SAMPLE)
    out = subprocess.run([BIN, "serve", "--config", cfg, "--socket", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "is not a socket" in out.stderr
    with open(path) as f:
        assert f.read() == "precious"


def test_config_error_exits_2_naming_file_and_key(workdir):
    cfg = os.path.join(workdir, "bad.toml")
    with open(cfg, "w") as f:
        f.write('[[backend]]\ntype = "oci-layout"\npath = "x"\nbogus = 1\n')
    out = subprocess.run([BIN, "serve", "--config", cfg], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == f"imagelet: config error: {cfg}: backend[0].bogus: unknown key for backend type \"oci-layout\""
