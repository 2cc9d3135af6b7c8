"""ImageFsInfo through the compiled binary: one entry per filesystem holding a
store, primary first, a real mount point, and du-style usage that this test
measures itself."""
import os
import shutil
import stat
import time

from conftest import EXAMPLES, FIXTURES, oci_backend


def du(path):
    """Allocated bytes and entries of a tree, symlinks not followed, hard links once."""
    seen, used, inodes = set(), 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            if name != dirpath and os.path.isdir(name) and not os.path.islink(name):
                continue  # directories are counted when os.walk enters them
            st = os.lstat(name)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            used += st.st_blocks * 512
            inodes += 1
    return used, inodes


def mount_point(path):
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def fs_info(server):
    return server.stub.ImageFsInfo(server.pb.ImageFsInfoRequest(), timeout=30)


def test_one_entry_per_filesystem_with_usage(serve, workdir):
    a = os.path.join(workdir, "a")
    b = os.path.join(workdir, "b")
    shutil.copytree(os.path.join(EXAMPLES, "sample-oci"), a)
    shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), b)
    before = time.time_ns()
    s = serve(oci_backend(a, name="a") + oci_backend(b, name="b"))
    r = fs_info(s)
    assert len(r.image_filesystems) == 1  # both stores share the temp directory's filesystem
    fs = r.image_filesystems[0]
    assert fs.fs_id.mountpoint == mount_point(workdir)
    (ua, ia), (ub, ib) = du(a), du(b)
    assert fs.used_bytes.value == ua + ub > 0
    assert fs.inodes_used.value == ia + ib > 0
    assert before - 60 * 10**9 <= fs.timestamp <= time.time_ns() + 10**9
    assert len(r.container_filesystems) == 0


def test_primary_store_first_on_another_filesystem(serve, workdir):
    other = "/dev/shm"
    assert os.path.isdir(other) and os.stat(other).st_dev != os.stat(workdir).st_dev, "needs a second filesystem"
    on_shm = os.path.join(other, f"imagelet-fsinfo-{os.getpid()}")
    shutil.copytree(os.path.join(EXAMPLES, "sample-oci"), on_shm)
    try:
        local = os.path.join(workdir, "local")
        shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), local)
        s = serve(oci_backend(on_shm, name="primary") + oci_backend(local, name="second"))
        mounts = [f.fs_id.mountpoint for f in fs_info(s).image_filesystems]
        assert mounts == [mount_point(on_shm), mount_point(local)]
    finally:
        shutil.rmtree(on_shm, ignore_errors=True)
