"""scripts/release: both device binaries and their sums, each checked for its
architecture, and each run as that architecture (the foreign one under
qemu-user-static), down to serving the CRI socket."""
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile

import pytest

import conftest
from conftest import EXAMPLES, FIXTURES, ROOT, SAMPLE_IMAGES_TABLE

with open(os.path.join(ROOT, "package.json")) as f:
    VERSION = json.load(f)["version"]
SAMPLE_CONFIG = os.path.join(EXAMPLES, "imagelet.toml")
# ELF e_machine, the qemu-user and Debian cross-libc names, and the image each
# architecture takes from the oci-multi fixture's index (by the config digest of
# that platform's manifest).
ARCHES = {
    "x64": {
        "e_machine": 0x3E,
        "machine": "x86_64",
        "multi_id": "sha256:74b26381582455c56a144ecb1c83ed77732811005f214efe9d4038b7de2711da",
    },
    "arm64": {
        "e_machine": 0xB7,
        "machine": "aarch64",
        "multi_id": "sha256:f9c039927919946f9b3febe2d96d87ba9fcb68ca976461e3e1ac2e92b903f927",
    },
}
HELLO_ID = "sha256:1dd76ae2e114a42c9432c3e8d712b19a773ff7555570e3d1efaeb74fbd66b271"
TOOLS_ID = "sha256:6470921982b6a2c48b1d039d6fd7d57b8e4545b596472e2c425a842650605806"


@pytest.fixture(scope="module")
def release():
    with tempfile.TemporaryDirectory(prefix="imagelet-release-") as out:
        r = subprocess.run(
            ["bash", os.path.join(ROOT, "scripts", "release"), "--out", out],
            capture_output=True, text=True, timeout=900,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        yield out


def binary(release, arch):
    return os.path.join(release, f"imagelet-{VERSION}-linux-{arch}")


def runner(arch):
    """The command prefix that runs a binary of `arch` on this host."""
    machine = ARCHES[arch]["machine"]
    if platform.machine() == machine:
        return []
    qemu, libc = shutil.which(f"qemu-{machine}-static"), f"/usr/{machine}-linux-gnu"
    assert qemu and os.path.isdir(libc), f"running the {arch} build needs qemu-user-static and libc's {machine} cross package"
    return [qemu, "-L", libc]


def run(release, arch, *args):
    return subprocess.run([*runner(arch), binary(release, arch), *args], capture_output=True, text=True, timeout=120)


def test_sums_cover_everything_and_verify(release):
    with open(os.path.join(release, "SHA256SUMS")) as f:
        named = sorted(line.split()[1] for line in f)
    assert named == sorted(set(os.listdir(release)) - {"SHA256SUMS"}) == sorted(
        [f"imagelet-{VERSION}-linux-x64", f"imagelet-{VERSION}-linux-arm64", "imagelet.service", "imagelet.socket", "writable-stores.conf", "mirror.conf",
         "config.toml.example"]
    )
    assert subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=release, capture_output=True).returncode == 0


@pytest.mark.parametrize("arch", ARCHES)
def test_binary_is_an_elf_executable_for_its_architecture(release, arch):
    path = binary(release, arch)
    with open(path, "rb") as f:
        ident = f.read(20)
    assert ident[:4] == b"\x7fELF"
    assert (ident[4], ident[5]) == (2, 1)  # 64-bit, little-endian
    (e_type, e_machine) = struct.unpack_from("<HH", ident, 16)
    assert e_type in (2, 3)  # an executable (or position-independent one)
    assert e_machine == ARCHES[arch]["e_machine"]
    assert os.stat(path).st_mode & 0o111


@pytest.mark.parametrize("arch", ARCHES)
def test_binary_runs_version_and_images(release, arch, workdir):
    out = run(release, arch, "version")
    assert (out.returncode, out.stdout) == (0, f"Version:  {VERSION}\nRuntimeApiVersion:  v1\nServes:  runtime.v1.ImageService\n"), out.stderr
    out = run(release, arch, "images", "--config", SAMPLE_CONFIG)
    assert out.returncode == 0, out.stderr
    assert out.stdout == SAMPLE_IMAGES_TABLE
    # It really runs as that architecture: from a multi-platform index it takes its own platform's image.
    config = os.path.join(workdir, "multi.toml")
    with open(config, "w") as f:
        f.write(f'[[backend]]\ntype = "oci-layout"\npath = "{os.path.join(FIXTURES, "oci-multi")}"\n')
    out = run(release, arch, "images", "-q", "--config", config)
    assert (out.returncode, out.stdout.split()) == (0, [ARCHES[arch]["multi_id"]]), out.stderr


def test_arm64_binary_serves_cri_under_qemu(release, workdir, serve, monkeypatch):
    # The shared harness starts conftest.BIN; a one-line wrapper puts qemu in front.
    wrapper = os.path.join(workdir, "imagelet-arm64")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join([*runner("arm64"), binary(release, "arm64")]) + ' "$@"\n')
    os.chmod(wrapper, 0o755)
    monkeypatch.setattr(conftest, "BIN", wrapper)
    s = serve(f'[[backend]]\ntype = "oci-layout"\npath = "{os.path.join(EXAMPLES, "sample-oci")}"\n')
    assert sorted(i.id for i in s.list_images(timeout=60)) == [HELLO_ID, TOOLS_ID]
    assert s.image_status("edge-tools:2.0", timeout=60).image.id == TOOLS_ID
    # Its CLI is a CRI client of the socket too.
    out = run(release, "arm64", "images", "-q", "--endpoint", f"unix://{s.socket}", "--timeout", "60")
    assert (out.returncode, out.stdout.split()) == (0, [TOOLS_ID, HELLO_ID]), out.stderr
    assert s.stop() == 0
