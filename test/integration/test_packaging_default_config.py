"""imagelet.service's ExecStart as it is (`imagelet serve`, no flags) reads
/etc/imagelet/config.toml (issue #21). The file is put there in a mount
namespace (/etc overlaid with a temporary layer), so the host's /etc is not touched."""
import os
import shlex
import subprocess
import time

import grpc

import cri_stubs
import unit_sandbox
from conftest import BIN, EXAMPLES, ROOT, oci_backend, stop_process_group

SERVICE = os.path.join(ROOT, "packaging", "systemd", "imagelet.service")
INSTALLED_BIN = "/usr/local/bin/imagelet"


def with_etc_imagelet(workdir, config_text, command):
    """Starts `command` (argv) in a mount namespace where /etc/imagelet/config.toml holds config_text."""
    unit_sandbox.skip_unless_possible()
    staged = os.path.join(workdir, "etc-imagelet")
    os.makedirs(staged)
    with open(os.path.join(staged, "config.toml"), "w") as f:
        f.write(config_text)
    upper, work = os.path.join(workdir, "etc-upper"), os.path.join(workdir, "etc-work")
    os.makedirs(upper)
    os.makedirs(work)
    q = shlex.quote
    # /etc overlaid (its files all still there), /etc/imagelet made in the overlay and the staged directory bound on it.
    setup = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={q(upper)},workdir={q(work)} /etc"
             f" && mkdir -p /etc/imagelet && mount --bind {q(staged)} /etc/imagelet")
    log = open(os.path.join(workdir, "serve.log"), "w")
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", setup + " && exec " + shlex.join(command)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return proc, log


def test_the_units_exec_start_serves_etc_imagelet_config_toml(workdir):
    host_had = os.path.exists("/etc/imagelet")
    exec_start = unit_sandbox.parse_unit(SERVICE)["Service"]["ExecStart"][0].split()
    assert exec_start == [INSTALLED_BIN, "serve"]  # nothing says where the config is: the default must be read
    sock = os.path.join(workdir, "etc-configured.sock")
    proc, log = with_etc_imagelet(workdir, f'socket = "{sock}"\n' + oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="etc"),
                                  [BIN, *exec_start[1:]])
    log_path = os.path.join(workdir, "serve.log")
    try:
        deadline = time.time() + 20
        while time.time() < deadline and proc.poll() is None and "serving CRI" not in open(log_path).read():
            time.sleep(0.05)
        logged = open(log_path).read()
        assert proc.poll() is None, logged
        assert "config=/etc/imagelet/config.toml" in logged and f"socket={sock}" in logged and 'backends="etc(oci-layout):ok:2"' in logged, logged
        pb, pbg = cri_stubs.load()
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            images = pbg.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=10).images
        assert sorted(t for i in images for t in i.repo_tags) == [
            "docker.io/library/edge-tools:2.0", "example.com/edge/hello:1.0", "example.com/edge/hello:latest"]
    finally:
        stop_process_group(proc)
        log.close()
    assert proc.returncode == 0
    assert os.path.exists("/etc/imagelet") == host_had  # the host's /etc was not touched
