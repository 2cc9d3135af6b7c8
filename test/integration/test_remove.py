"""RemoveImage on writable stores (oci-layout, archives), through the compiled
binary and a C-core client; what is left on disk is checked by the tests' own
OCI layout reader (oci_check.py)."""
import json
import os
import shutil
import threading
import time

import grpc
import pytest

import oci_check
import synthetic
from conftest import FIXTURES, expected, oci_backend, run_cli

E = expected()
HELLO = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "1.0")
SECOND = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "2.0")
HELLO_NAMES = ["localhost/oci-umoci:1.0", "localhost/oci-umoci:latest", "example.com/edge/hello:1.0",
               f"localhost/oci-umoci@{HELLO['entryDigest']}", f"example.com/edge/hello@{HELLO['entryDigest']}", HELLO["id"]]
with open(os.path.join(FIXTURES, "archives", "expected.json")) as f:
    ARCHIVES = json.load(f)


def copy(workdir, name, fixture=None):
    dst = os.path.join(workdir, name)
    shutil.copytree(os.path.join(FIXTURES, fixture or name), dst)
    return dst


def remove(server, ref, timeout=30):
    pb = server.pb
    return server.stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=timeout)


def refused(server, ref):
    with pytest.raises(grpc.RpcError) as err:
        remove(server, ref)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
    return err.value.details()


def assert_gone(server, names):
    for name in names:
        assert not server.image_status(name).HasField("image"), name
        assert list(server.list_images(name)) == [], name


@pytest.fixture
def layout(workdir):
    return copy(workdir, "oci-umoci")


@pytest.mark.parametrize("ref", ["localhost/oci-umoci:latest", HELLO["id"], f"example.com/edge/hello@{HELLO['entryDigest']}", HELLO["id"][7:20]])
def test_removal_by_tag_id_or_digest_removes_every_name_and_the_blobs(serve, layout, ref):
    s = serve(oci_backend(layout, name="umoci", writable=True))
    second_blobs = oci_check.reachable(layout, oci_check.entries_named(layout, lambda n: n == "2.0"))
    hello_blobs = oci_check.reachable(layout, oci_check.entries_named(layout, lambda n: n != "2.0"))
    remove(s, ref)
    assert_gone(s, HELLO_NAMES)
    assert s.image_status("localhost/oci-umoci:2.0").image.id == SECOND["id"]
    # index.json holds only the other image's entry, every blob it reaches is whole,
    # and no blob is left that nothing reaches.
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in oci_check.index(layout)["manifests"]] == ["2.0"]
    assert oci_check.reachable(layout) == second_blobs == oci_check.on_disk(layout)
    assert not (hello_blobs - second_blobs) & oci_check.on_disk(layout)
    assert not os.path.exists(os.path.join(layout, ".imagelet-removal.json"))
    # A second removal of the same reference is OK (RemoveImage is idempotent).
    remove(s, ref if not ref.startswith(HELLO["id"][7:20]) else HELLO["id"])
    # A fresh reader (a restart) sees the same.
    s.stop()
    s2 = serve(oci_backend(layout, name="umoci"), subdir="again")
    assert [i.id for i in s2.list_images()] == [SECOND["id"]]


def test_removal_keeps_blobs_shared_with_other_images(serve, workdir):
    layout = os.path.join(workdir, "many")
    ids = synthetic.write_layout(layout, 3)  # three images, one shared layer
    s = serve(oci_backend(layout, name="many", writable=True))
    before = oci_check.on_disk(layout)
    remove(s, "bench.local/edge/app1:1.0")
    assert sorted(i.id for i in s.list_images()) == sorted(f"sha256:{i}" for i in (ids[0], ids[2]))
    left = oci_check.on_disk(layout)
    assert f"sha256:{ids[1]}" in before - left  # its config
    assert len(before - left) == 2  # its manifest and its config; the shared layer stays
    assert oci_check.reachable(layout) == left


def test_removal_of_an_artifact_keeps_the_shared_empty_config_and_layer(serve, workdir):
    layout = copy(workdir, "oci-artifacts")
    with open(os.path.join(FIXTURES, "oci-artifacts.expected.json")) as f:
        model, settings = json.load(f)
    s = serve(oci_backend(layout, name="artifacts", writable=True))
    remove(s, model["ref"])
    assert_gone(s, [model["ref"], model["id"]])
    assert s.image_status(settings["ref"]).image.id == settings["id"]
    left = oci_check.on_disk(layout)
    assert "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" in left  # the empty config
    assert left == oci_check.reachable(layout) and len(left) == 4  # settings' manifest, config, two layers


def test_absent_image_is_ok(serve, layout):
    s = serve(oci_backend(layout, name="umoci", writable=True))
    before = oci_check.on_disk(layout)
    for ref in ("busybox:1.36", "sha256:" + "f" * 64, "localhost/oci-umoci@sha256:" + "0" * 64):
        remove(s, ref)
    assert oci_check.on_disk(layout) == before and len(s.list_images()) == 2


def test_malformed_reference_is_invalid_argument(serve, layout):
    s = serve(oci_backend(layout, name="umoci", writable=True))
    for ref in ("", "Not A Ref", "a" * 5000):
        with pytest.raises(grpc.RpcError) as err:
            remove(s, ref)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_read_only_store_is_refused_naming_it_and_nothing_is_removed(serve, workdir, layout):
    # The default is read-only; and an image also held by a read-only store is kept everywhere.
    ro = copy(workdir, "ro", "oci-skopeo-noref")
    s = serve(oci_backend(layout, name="rw", writable=True) + oci_backend(ro, name="skopeo"))
    before_rw, before_ro = oci_check.on_disk(layout), oci_check.on_disk(ro)
    details = refused(s, "localhost/oci-umoci:2.0")
    assert '"skopeo" (oci-layout)' in details and "writable = true" in details
    assert oci_check.on_disk(layout) == before_rw and oci_check.on_disk(ro) == before_ro
    assert s.image_status("localhost/oci-umoci:2.0").image.pinned
    # The image only the writable store holds goes.
    remove(s, "localhost/oci-umoci:1.0")
    assert_gone(s, HELLO_NAMES)


def test_archives_delete_the_tarballs_holding_only_the_image(serve, workdir):
    store = copy(workdir, "archives", os.path.join("archives", "store"))
    s = serve(f'[[backend]]\ntype = "archives"\nname = "tarballs"\npath = "{store}"\nwritable = true\n')
    tools = next(i for e in ARCHIVES if e["file"] == "tools-docker.tar.gz" for i in e["images"])
    hello = next(i for e in ARCHIVES if e["file"] == "hello-docker.tar" for i in e["images"])
    # Both images share multi-docker.tar and ctr-export.tar: refused, naming the tarballs, nothing deleted.
    before = sorted(os.listdir(store))
    details = refused(s, "docker.io/library/edge-tools:2.0")
    assert "multi-docker.tar" in details and "ctr-export.tar" in details
    assert sorted(os.listdir(store)) == before
    assert s.image_status(tools["id"]).image.pinned  # it cannot be removed: kubelet's GC must not pick it
    # Without the shared tarballs, every tarball of the image goes, with every name.
    os.unlink(os.path.join(store, "multi-docker.tar"))
    os.unlink(os.path.join(store, "ctr-export.tar"))
    deadline = time.time() + 10
    while s.image_status(tools["id"]).image.pinned and time.time() < deadline:
        time.sleep(0.05)
    assert not s.image_status(tools["id"]).image.pinned
    remove(s, "docker.io/library/edge-tools:2.0")
    assert sorted(os.listdir(store)) == ["hello-docker.tar", "hello-oci.tar"]
    assert_gone(s, ["edge-tools:2.0", tools["id"]])
    assert s.image_status(hello["id"]).HasField("image")
    remove(s, "docker.io/library/edge-tools:2.0")  # again: OK


def test_archive_of_artifacts_lists_two_and_refuses_removal_of_one(serve, workdir):
    store = copy(workdir, "archives", "archives-artifacts")
    with open(os.path.join(FIXTURES, "oci-artifacts.expected.json")) as f:
        model, settings = json.load(f)
    s = serve(f'[[backend]]\ntype = "archives"\nname = "tarballs"\npath = "{store}"\nwritable = true\n')
    assert sorted(i.id for i in s.list_images()) == sorted([model["id"], settings["id"]])
    assert "artifacts.tar" in refused(s, model["ref"])


def test_image_fs_info_shows_the_freed_bytes(serve, layout):
    s = serve('fs_info_interval = "1m"\n' + oci_backend(layout, name="umoci", writable=True))
    fs = lambda: s.stub.ImageFsInfo(s.pb.ImageFsInfoRequest(), timeout=30).image_filesystems[0]
    before = fs()
    freed = sum(os.stat(oci_check.blob_path(layout, d)).st_blocks * 512 for d in
                oci_check.reachable(layout, oci_check.entries_named(layout, lambda n: n != "2.0")) - oci_check.reachable(layout, oci_check.entries_named(layout, lambda n: n == "2.0")))
    remove(s, HELLO["id"])
    after = fs()
    # index.json shrank too (by less than a block, usually nothing allocated); the blobs' blocks are gone.
    assert before.used_bytes.value - after.used_bytes.value >= freed > 0
    assert before.inodes_used.value - after.inodes_used.value == 3  # manifest, config, layer
    assert after.timestamp > before.timestamp


# --- consistency under load and interruption ---------------------------------------------------


def test_removals_under_concurrent_load_fail_no_call_and_show_no_half_removed_image(serve, workdir):
    layout = os.path.join(workdir, "many")
    ids = [f"sha256:{i}" for i in synthetic.write_layout(layout, 40)]
    s = serve('poll_interval = "100ms"\n' + oci_backend(layout, name="many", writable=True))
    stop = threading.Event()
    failures, calls, torn, resurrected = [], [0], [], []
    removed_at = {}

    def reader(n):
        import grpc as g
        ch = g.insecure_channel(f"unix:{s.socket}")
        from cri_stubs import load
        pb, pbg = load()
        stub = pbg.ImageServiceStub(ch)
        i = n
        while not stop.is_set():
            i += 1
            try:
                t0 = time.monotonic()
                if i % 2:
                    images = stub.ListImages(pb.ListImagesRequest(), timeout=10).images
                    for image in images:
                        if len(image.repo_tags) != 1 or len(image.repo_digests) != 1:
                            torn.append(image.id)
                        # Listed by a call that began after its removal had answered: resurrected.
                        if removed_at.get(image.id, t0) < t0:
                            resurrected.append(image.id)
                else:
                    ref = f"bench.local/edge/app{i % 40}:1.0"
                    r = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=10)
                    if r.HasField("image") and list(r.image.repo_tags) != [ref]:
                        torn.append(ref)
                calls[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))
        ch.close()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    def removal(ref, image_id):
        try:
            remove(s, ref)
            removed_at[image_id] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            failures.append(f"RemoveImage {ref}: {e!r}")

    try:
        while calls[0] < 20:
            time.sleep(0.01)
        start = calls[0]
        # Two removals at a time, while a rescan runs every 100 ms.
        for k in range(0, 30, 2):
            pair = [threading.Thread(target=removal, args=(ref, image_id)) for ref, image_id in ((f"bench.local/edge/app{k}:1.0", ids[k]), (ids[k + 1], ids[k + 1]))]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
            time.sleep(0.02)
        during = calls[0] - start
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and torn == [] and resurrected == []
    assert during >= 50, during
    left = sorted(i.id for i in s.list_images())
    assert left == sorted(ids[30:])  # nothing lost, nothing resurrected
    assert oci_check.reachable(layout) == oci_check.on_disk(layout)
    assert len(oci_check.index(layout)["manifests"]) == 10
    print(f"{during} calls during 30 removals, 0 failed")


def interrupted_layout(workdir, after_index):
    """The on-disk state of a removal of hello killed after its first step
    (journal written, index.json replaced) or before it (journal only)."""
    layout = copy(workdir, os.path.join("interrupted", "oci-umoci"), "oci-umoci")
    hello_entries = oci_check.entries_named(layout, lambda n: n != "2.0")
    doomed = oci_check.reachable(layout, hello_entries) - oci_check.reachable(layout, oci_check.entries_named(layout, lambda n: n == "2.0"))
    with open(os.path.join(layout, ".imagelet-removal.json"), "w") as f:
        json.dump({"removing": HELLO["id"], "blobs": sorted(oci_check.reachable(layout, hello_entries))}, f)
    if after_index:
        index = oci_check.index(layout)
        index["manifests"] = oci_check.entries_named(layout, lambda n: n == "2.0")
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump(index, f)
    else:
        # Killed while writing the new index.json: its temporary file, cut short.
        with open(os.path.join(layout, ".imagelet-tmp-4242-index.json"), "w") as f:
            f.write('{"schemaVersion": 2, "manif')
    return layout, doomed


def test_a_removal_killed_after_index_json_leaves_a_layout_that_reads_correctly(serve, workdir):
    layout, doomed = interrupted_layout(workdir, after_index=True)
    # A read-only reader (another imagelet, skopeo) sees the image gone and the rest whole.
    ro = serve(oci_backend(layout, name="umoci"), subdir="ro")
    assert [i.id for i in ro.list_images()] == [SECOND["id"]]
    assert ro.stub.ImageStatus(ro.pb.ImageStatusRequest(image=ro.pb.ImageSpec(image="localhost/oci-umoci:2.0"), verbose=True), timeout=10).info
    assert doomed <= oci_check.on_disk(layout)  # the leftovers are still there: a reader deletes nothing
    ro.stop()
    # The next start of a writable imagelet finishes the job.
    rw = serve(oci_backend(layout, name="umoci", writable=True), subdir="rw")
    assert [i.id for i in rw.list_images()] == [SECOND["id"]]
    deadline = time.time() + 10  # the start finishes it in the background
    while os.path.exists(os.path.join(layout, ".imagelet-removal.json")) and time.time() < deadline:
        time.sleep(0.02)
    assert not doomed & oci_check.on_disk(layout)
    assert oci_check.reachable(layout) == oci_check.on_disk(layout)
    assert not os.path.exists(os.path.join(layout, ".imagelet-removal.json"))
    assert "finished a removal that was interrupted" in rw.log()


def test_a_removal_killed_before_index_json_removed_nothing(serve, workdir):
    layout, _ = interrupted_layout(workdir, after_index=False)
    before = oci_check.on_disk(layout)
    s = serve(oci_backend(layout, name="umoci", writable=True))
    # The journal's blobs are all still reached: none is deleted, the image is whole and removable.
    assert oci_check.on_disk(layout) == before
    assert s.image_status("localhost/oci-umoci:1.0").image.id == HELLO["id"]
    remove(s, "localhost/oci-umoci:1.0")
    assert_gone(s, HELLO_NAMES)
    assert oci_check.reachable(layout) == oci_check.on_disk(layout)
    assert [f for f in os.listdir(layout) if f.startswith(".imagelet")] == []


def test_index_json_keeps_its_mode_and_other_fields(serve, layout):
    index_path = os.path.join(layout, "index.json")
    index = oci_check.index(layout)
    index["annotations"] = {"org.example.kept": "yes"}
    with open(index_path, "w") as f:
        json.dump(index, f)
    os.chmod(index_path, 0o640)
    s = serve(oci_backend(layout, name="umoci", writable=True))
    remove(s, "localhost/oci-umoci:2.0")
    assert oci_check.index(layout)["annotations"] == {"org.example.kept": "yes"}
    assert os.stat(index_path).st_mode & 0o777 == 0o640
    assert [f for f in os.listdir(layout) if f.startswith(".imagelet")] == []


# --- crictl's calls -----------------------------------------------------------------------------


def test_crictl_rmi_is_image_status_then_remove_image(serve, layout):
    s = serve(oci_backend(layout, name="umoci", writable=True))
    ref = "example.com/edge/hello:1.0"
    # crictl rmi REF: ImageStatus(REF), then RemoveImage(REF); afterwards none of the tags resolves.
    status = s.image_status(ref)
    assert status.image.id == HELLO["id"]
    remove(s, ref)
    for tag in status.image.repo_tags:
        assert not s.image_status(tag).HasField("image"), tag
    # crictl pull REF is PullImage(REF): the other image is still "up to date".
    assert s.stub.PullImage(s.pb.PullImageRequest(image=s.pb.ImageSpec(image="localhost/oci-umoci:2.0")), timeout=10).image_ref == SECOND["id"]


def test_cli_rmi_mirrors_crictl(serve, layout):
    s = serve(oci_backend(layout, name="umoci", writable=True))
    env = {"IMAGELET_ENDPOINT": f"unix://{s.socket}"}
    out = run_cli("rmi", "localhost/oci-umoci:2.0", "example.com/edge/hello:1.0", env=env)
    assert out.returncode == 0, out.stderr
    # crictl's lines: one per tag of each image removed.
    assert sorted(out.stdout.splitlines()) == sorted(
        f"Deleted: {t}" for t in ("localhost/oci-umoci:2.0", "localhost/oci-umoci:1.0", "localhost/oci-umoci:latest", "example.com/edge/hello:1.0"))
    again = run_cli("rmi", "localhost/oci-umoci:2.0", env=env)
    assert again.returncode == 1 and "no such image" in again.stderr


def test_a_blob_that_cannot_be_deleted_fails_neither_its_removal_nor_the_next(serve, layout):
    # A layer of 2.0 that unlink(2) refuses (a directory in its place, EISDIR): the image is gone from
    # index.json all the same, so RemoveImage is OK, and the leftover must not fail every later removal.
    blobs = os.path.join(layout, "blobs", "sha256")
    entry = next(m for m in oci_check.index(layout)["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "2.0")
    with open(os.path.join(blobs, entry["digest"][7:])) as f:
        layer = json.load(f)["layers"][0]["digest"][7:]
    os.unlink(os.path.join(blobs, layer))
    os.mkdir(os.path.join(blobs, layer))
    s = serve(oci_backend(layout, name="umoci", writable=True))
    remove(s, "localhost/oci-umoci:2.0")
    assert_gone(s, ["localhost/oci-umoci:2.0", SECOND["id"]])
    remove(s, "localhost/oci-umoci:1.0")
    assert_gone(s, HELLO_NAMES)
    assert os.listdir(blobs) == [layer]
    with open(os.path.join(layout, ".imagelet-removal.json")) as f:
        assert json.load(f)["blobs"] == [f"sha256:{layer}"]
    assert "could not be deleted" in s.log()
