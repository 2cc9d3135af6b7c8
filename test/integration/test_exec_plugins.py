"""Exec plugins (any language, JSON on stdin/stdout) through the compiled binary,
each fault next to a healthy backend that keeps serving."""
import json
import os
import subprocess
import time

import pytest

from conftest import EXAMPLES, ROOT, oci_backend, run_cli

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")
CATALOG_PLUGIN = os.path.join(ROOT, "plugins", "exec-catalog", "imagelet-catalog.sh")
AGENT_ID = "sha256:3f0a8d7b8f1e4c2a9b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"


def exec_backend(path, name, args=(), timeout=None):
    text = f'[[backend]]\ntype = "exec"\nname = "{name}"\npath = "{path}"\nargs = {json.dumps(list(args))}\n'
    return text + (f'timeout = "{timeout}"\n' if timeout else "")


def script(workdir, name, body):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def test_example_catalog_plugin_serves_its_images(serve):
    s = serve(SAMPLE + exec_backend(CATALOG_PLUGIN, "catalog", [os.path.join(ROOT, "plugins", "exec-catalog", "catalog.json")]))
    ids = {i.id for i in s.list_images()}
    assert AGENT_ID in ids and len(ids) == 3
    r = s.image_status("vendor.example/edge/agent:2.1")
    assert r.image.id == AGENT_ID and r.image.username == "agent" and r.image.size == 1048576


FAULTS = {
    "crash": ('echo "agent database is locked" >&2; exit 3', "exited with status 3: agent database is locked"),
    "garbage": ("echo 'this is not json'", "stdout is not JSON"),
    "wrong-protocol": ("echo '{\"protocol\": 9, \"images\": []}'", "reply protocol 9 is not 1"),
    "bad-record": ("echo '{\"protocol\": 1, \"images\": [{\"id\": \"nope\", \"repoTags\": [], \"repoDigests\": [], \"size\": 1, \"kind\": \"oci\"}]}'", "record 0"),
    "flood": ("cat /dev/zero", "more than 67108864 bytes on stdout"),
    "hang": ("sleep 30", "timed out"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_exec_plugin_is_contained(serve, workdir, fault):
    body, message = FAULTS[fault]
    path = script(workdir, f"fault-{fault}-{os.getpid()}.sh", body)
    started = time.time()
    # The flood must reach the stdout cap before its timeout; the others time out fast.
    s = serve(exec_backend(path, f"plugin-{fault}", timeout="10s" if fault == "flood" else "500ms") + SAMPLE)
    assert time.time() - started < 15
    assert len(s.list_images()) == 2  # the healthy backend is served
    log = s.log()
    assert f"backend=plugin-{fault}" in log
    if fault == "crash":
        assert "agent database is locked" in log and "stream=stderr" in log
    out = run_cli("plugins", "--config", s.config, "--log-level", "error")
    row = next(line for line in out.stdout.splitlines() if line.startswith(f"plugin-{fault}"))
    assert "failing" in row and message.split(":")[0] in row, row
    if fault in ("hang", "flood"):
        time.sleep(0.5)
        left = subprocess.run(["pgrep", "-f", os.path.basename(path)], capture_output=True, text=True).stdout.split()
        assert left == [], f"plugin processes left running: {left}"


def test_missing_executable_is_a_failing_backend(serve, workdir):
    s = serve(exec_backend(os.path.join(workdir, "absent.sh"), "absent") + SAMPLE)
    assert len(s.list_images()) == 2
    assert "cannot run" in s.log()
