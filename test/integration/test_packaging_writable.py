"""A writable store under imagelet.service: the unit keeps the file system
read-only, so RemoveImage fails there, changing nothing and saying what to do,
until packaging/systemd/writable-stores.conf opens the store's path. Run in an
emulation of the unit's sandbox built from the unit file (unit_sandbox.py)."""
import os
import shutil
import subprocess

import grpc
import pytest

import conftest
import oci_check
import unit_sandbox
from conftest import BIN, FIXTURES, ROOT, oci_backend

SYSTEMD = os.path.join(ROOT, "packaging", "systemd")
SERVICE = os.path.join(SYSTEMD, "imagelet.service")
DROP_IN = os.path.join(SYSTEMD, "writable-stores.conf")


@pytest.fixture
def sandboxed_store(workdir):
    unit_sandbox.skip_unless_possible()
    store = os.path.join(workdir, "store", "oci-umoci")
    shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), store)
    runtime_dir = os.path.join(workdir, "run")
    os.makedirs(runtime_dir)
    return store, runtime_dir


def test_drop_in_opens_the_well_known_writable_stores():
    service = unit_sandbox.parse_unit(DROP_IN)["Service"]
    assert service["ReadWritePaths"] == ["/var/lib/imagelet/oci /var/lib/imagelet/archives"]
    # The unit itself stays read-only: only the drop-in, installed by choice, opens a store.
    assert "ReadWritePaths" not in unit_sandbox.parse_unit(SERVICE)["Service"]


def remove(s, ref):
    return s.stub.RemoveImage(s.pb.RemoveImageRequest(image=s.pb.ImageSpec(image=ref)), timeout=30)


def test_removal_in_the_unit_sandbox_needs_the_drop_in(workdir, serve, monkeypatch, sandboxed_store):
    store, runtime_dir = sandboxed_store
    config = oci_backend(store, name="device", writable=True)
    before = oci_check.on_disk(store)
    # Without the drop-in: refused by the file system, nothing changed, the reason and the fix in the answer.
    monkeypatch.setattr(conftest, "BIN", unit_sandbox.wrapper(SERVICE, BIN, workdir, runtime_dir))
    s = serve(config)
    with pytest.raises(grpc.RpcError) as err:
        remove(s, "localhost/oci-umoci:2.0")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "EROFS" in err.value.details() and "ReadWritePaths" in err.value.details()
    assert oci_check.on_disk(store) == before and len(s.list_images()) == 2
    assert [f for f in os.listdir(store) if f.startswith(".imagelet")] == []
    s.stop()
    # With it (the drop-in's paths, here the test's store): removed.
    monkeypatch.setattr(conftest, "BIN", unit_sandbox.wrapper(SERVICE, BIN, workdir, runtime_dir, read_write=[store]))
    s = serve(config)
    remove(s, "localhost/oci-umoci:2.0")
    assert len(s.list_images()) == 1 and not s.image_status("localhost/oci-umoci:2.0").HasField("image")
    assert oci_check.reachable(store) == oci_check.on_disk(store) < before
