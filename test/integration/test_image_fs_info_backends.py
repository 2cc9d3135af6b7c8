"""ImageFsInfo for every kind of store (issue #21; test_image_fs_info.py has the
oci-layout's rules): each backend's answer is its store's usage as `du` counts
it, on the store's filesystem; for containerd, compared with containerd's own
CRI answer on the same root too."""
import os
import shutil

import pytest

from conftest import FIXTURES
from test_backend_containerd import live, needs_containerd  # noqa: F401 (live is a fixture)
from test_image_fs_info import du, fs_info, mount_point

# Each kind: the fixture store (made by real tools, scripts/make-fixtures-*) and its [[backend]] entry.
STORES = {
    "archives": ("archives/store", 'type = "archives"'),
    "containers-storage": ("containers-storage", 'type = "containers-storage"'),
    "docker": ("docker/root", 'type = "docker"'),
    "isulad": ("isulad/graph", 'type = "isulad"'),
    "containerd": ("containerd/root", 'type = "containerd"'),
}


def backend(kind, path):
    return f'[[backend]]\n{STORES[kind][1]}\nname = "{kind}"\npath = "{path}"\n'


@pytest.mark.parametrize("kind", sorted(STORES))
def test_each_backends_usage_is_du_of_its_store(kind, serve, workdir):
    store = os.path.join(workdir, "store")
    shutil.copytree(os.path.join(FIXTURES, STORES[kind][0]), store, symlinks=True)
    r = fs_info(serve(backend(kind, store), subdir="server"))
    assert [f.fs_id.mountpoint for f in r.image_filesystems] == [mount_point(store)]
    used, inodes = du(store)
    fs = r.image_filesystems[0]
    assert (fs.used_bytes.value, fs.inodes_used.value) == (used, inodes) and used > 0, kind


@needs_containerd
def test_containerd_usage_beside_containerds_own_answer(live, serve):
    """containerd's CRI plugin answers for its snapshotter's directory (the
    unpacked layers: the snapshots' usage), imagelet for the store it serves
    images from (content store, metadata and snapshots: du of the root). Both
    name the same filesystem, and imagelet's count includes containerd's."""
    root, ctd, stub, pb = live
    theirs = stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=10).image_filesystems
    ours = fs_info(serve(backend("containerd", root))).image_filesystems
    assert len(theirs) == len(ours) == 1
    assert theirs[0].fs_id.mountpoint.startswith(os.path.join(root, "io.containerd.snapshotter.v1."))
    assert ours[0].fs_id.mountpoint == mount_point(theirs[0].fs_id.mountpoint) == mount_point(root)
    assert (ours[0].used_bytes.value, ours[0].inodes_used.value) == du(root)
    snapshotter = theirs[0].fs_id.mountpoint
    assert theirs[0].used_bytes.value <= du(snapshotter)[0] <= ours[0].used_bytes.value
    assert theirs[0].inodes_used.value <= du(snapshotter)[1] <= ours[0].inodes_used.value
