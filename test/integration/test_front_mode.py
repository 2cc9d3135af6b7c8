"""Front mode with real parts: kubelet's image endpoint is imagelet, whose
[runtime] endpoint is Debian's containerd 1.6 (CRI plugin, runc) on a temp root,
and whose [mirror] is what containerd's hosts.toml names (`_default`), so
containerd pulls the preloaded images (the pod's and the sandbox's) from
imagelet. Images in no store live in Debian's docker-registry (distribution
2.8), named by its address: the "online" registry a forwarded pull reaches.

Each pull policy runs kubelet's EnsureImageExists against imagelet, then a
host-network pod on containerd whose container prints its marker; each on a
fresh runtime root. Also: one shared pull, one view of both image sets,
RemoveImage, ImageFsInfo, forwarded pulls, the runtime down (UNAVAILABLE naming
it, the stores served) and back (reconnected), a runtime with no mirror
configuration and one whose mirror never answers (one log line with the fix),
runtime.v1alpha2."""
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

from conftest import ROOT, oci_backend, run_cli

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from front_node import SANDBOX, DistributionRegistry, Layout, Node, ensure_image_exists, free_port, marker_image, pause_image, read_log, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("containerd", "runc", "docker-registry", "skopeo")) or not os.path.exists("/bin/busybox"),
    reason="needs root, containerd, runc, docker-registry, skopeo and busybox-static",
)

REF = "docker.io/library/front-bb:1.0"
PULLED = "the runtime pulled a preloaded image from the mirror"


@pytest.fixture
def store(workdir):
    """The preloaded store: an OCI layout with a marker image and the sandbox image, under their full names."""
    layout = os.path.join(workdir, "store")
    lay = Layout(layout)
    ids = {"bb": marker_image(lay, REF, "MARKER-front"), "pause": pause_image(lay, SANDBOX)}
    return layout, ids


@pytest.fixture
def upstream(workdir):
    """A registry holding images no store has (distribution 2.8 on loopback)."""
    registry = DistributionRegistry(os.path.join(workdir, "upstream"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def push_other(workdir, registry, marker, name):
    """An image in no store, pushed to `registry` as `name`; returns its ID."""
    where = os.path.join(workdir, f"other-{marker}")
    image_id = marker_image(Layout(where), "x", marker)
    registry.push(where, "x", name)
    return image_id


@pytest.fixture
def front(workdir, serve):
    """front(layout, name, mirror=True, registries=(), mirror_wait=None) → (node, imagelet): containerd whose hosts.toml
    names imagelet's mirror (or, with mirror=False, nothing; with a HOST:PORT string, that address)."""
    nodes = []

    def make(layout, name="node", mirror=True, registries=(), mirror_wait=None):
        listen = f"127.0.0.1:{free_port()}"
        target = listen if mirror is True else (mirror or None)
        n = Node(os.path.join(workdir, name), mirror=target, registries=registries)
        nodes.append(n)
        n.start()
        wait = f'mirror_wait = "{mirror_wait}"\n' if mirror_wait else ""
        config = f'[mirror]\nlisten = "{listen}"\n[runtime]\nendpoint = "{n.endpoint}"\ntimeout = "3s"\n{wait}' + oci_backend(layout, name="preloaded")
        return n, serve(config, subdir=f"imagelet-{name}")

    yield make
    for n in nodes:
        n.stop()


def ids_in(stub, pb):
    return {i.id: i for i in stub.ListImages(pb.ListImagesRequest(), timeout=30).images}


def status(server, ref, timeout=60):
    return server.stub.ImageStatus(server.pb.ImageStatusRequest(image=server.pb.ImageSpec(image=ref)), timeout=timeout)


def pull(server, ref, timeout=60):
    return server.stub.PullImage(server.pb.PullImageRequest(image=server.pb.ImageSpec(image=ref)), timeout=timeout).image_ref


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_each_pull_policy_starts_the_container_from_a_preloaded_image(policy, store, front):
    layout, ids = store
    n, server = front(layout, f"node-{policy}")
    stub, pb = server.stub, server.pb
    # Not in the runtime yet: imagelet lists it (from the store), pinned: nothing to remove.
    assert ids_in(stub, pb)[ids["bb"]].pinned
    assert ids["bb"] not in ids_in(n.images, n.pb)
    image_ref = ensure_image_exists(stub, pb, REF, policy)
    assert image_ref == ids["bb"]
    # The runtime holds it now, pulled from imagelet's mirror, under the same ID.
    theirs = ids_in(n.images, n.pb)
    assert ids["bb"] in theirs and REF in theirs[ids["bb"]].repo_tags
    # The sandbox image is preloaded too: RunPodSandbox pulls it from the mirror.
    _, container, log = n.run_pod(image_ref, f"pod-{policy.lower()}")
    assert n.wait_exit(container), open(n.log_path).read()[-3000:]
    assert "MARKER-front" in read_log(log)
    assert ids["pause"] in ids_in(n.images, n.pb)
    # One entry, names merged; the runtime's copy makes it removable.
    merged = ids_in(stub, pb)[ids["bb"]]
    assert REF in merged.repo_tags and not merged.pinned
    assert server.log().count(PULLED) == 1


def test_concurrent_status_calls_share_one_pull(store, front):
    layout, ids = store
    n, server = front(layout)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: status(server, REF).image.id, range(8)))
    assert answers == [ids["bb"]] * 8
    assert server.log().count(PULLED) == 1


def test_one_view_remove_and_image_fs_info(store, front, upstream, workdir, request):
    layout, ids = store
    # The store on another filesystem (tmpfs) than the runtime's root, so ImageFsInfo's order shows.
    shm = tempfile.mkdtemp(prefix="imagelet-front-", dir="/dev/shm")
    request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))
    layout = shutil.copytree(layout, os.path.join(shm, "store"))
    n, server = front(layout, registries=[upstream.addr])
    stub, pb = server.stub, server.pb
    # An image only the runtime has (pulled by it directly, from a registry).
    other_ref = f"{upstream.addr}/library/runtime-only:2"
    other_id = push_other(workdir, upstream, "MARKER-other", "library/runtime-only:2")
    n.images.PullImage(n.pb.PullImageRequest(image=n.pb.ImageSpec(image=other_ref)), timeout=60)
    assert wait_for(lambda: other_id in ids_in(stub, pb), 20)
    listed = ids_in(stub, pb)
    assert {ids["bb"], ids["pause"], other_id} <= set(listed)
    assert not listed[other_id].pinned
    # StreamImages: the same view.
    streamed = [i.id for r in stub.StreamImages(pb.StreamImagesRequest(), timeout=30) for i in r.images]
    assert sorted(streamed) == sorted(listed)
    ensure_image_exists(stub, pb, REF, "IfNotPresent")
    # ImageFsInfo: the runtime's image filesystem first (where pulls land, what GC can free), then the store's.
    theirs = n.images.ImageFsInfo(n.pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    ours = stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    runtime_mount = subprocess.run(["stat", "-c", "%m", theirs[0].fs_id.mountpoint], capture_output=True, text=True).stdout.strip()
    assert [f.fs_id.mountpoint for f in ours] == [runtime_mount, "/dev/shm"]
    # RemoveImage: the runtime's copy goes, the preloaded image stays, pinned again.
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ids["bb"])), timeout=60)
    assert ids["bb"] not in ids_in(n.images, n.pb)
    assert ids_in(stub, pb)[ids["bb"]].pinned
    # Again: nothing left that imagelet may remove.
    with pytest.raises(grpc.RpcError) as e:
        stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ids["bb"])), timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A runtime-only image goes from the runtime, and so from the view.
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=other_ref)), timeout=60)
    assert other_id not in ids_in(n.images, n.pb) and other_id not in ids_in(stub, pb)
    # The next start pulls the preloaded image again, from the mirror.
    assert ensure_image_exists(stub, pb, REF, "Never") == ids["bb"]
    assert server.log().count(PULLED) == 2


def test_pull_of_an_image_in_no_store_is_forwarded(store, front, upstream, workdir):
    layout, ids = store
    n, server = front(layout, registries=[upstream.addr])
    ref = f"{upstream.addr}/library/online:3"
    first = push_other(workdir, upstream, "MARKER-forwarded", "library/online:3")
    assert pull(server, ref) == first
    assert ids_in(server.stub, server.pb)[first].repo_tags == [ref]
    # Listed now, but only the runtime's: Always's PullImage is still the runtime's pull (it sees the tag moved).
    newer = push_other(workdir, upstream, "MARKER-newer", "library/online:3")
    assert pull(server, ref) == newer
    _, container, log = n.run_pod(newer, "pod-forwarded")
    assert n.wait_exit(container)
    assert "MARKER-newer" in read_log(log)
    # A name nobody has: the runtime's error, naming the runtime.
    with pytest.raises(grpc.RpcError) as e:
        pull(server, f"{upstream.addr}/library/nowhere:1")
    assert n.endpoint in e.value.details()


def test_runtime_down_and_back(store, front):
    layout, ids = store
    n, server = front(layout)
    stub, pb = server.stub, server.pb
    ensure_image_exists(stub, pb, REF, "IfNotPresent")
    n.stop_daemon()
    # Stores still served; calls that need the runtime answer UNAVAILABLE naming it.
    assert ids["bb"] in ids_in(stub, pb)
    assert status(server, REF).image.id == ids["bb"]
    for call in (lambda: pull(server, "docker.io/library/elsewhere:1"), lambda: pull(server, REF),
                 lambda: stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=REF)), timeout=30)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and n.endpoint in e.value.details(), e.value.details()
    assert stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    out = run_cli("plugins", "--endpoint", f"unix://{server.socket}", "-o", "json")
    runtime_row = [b for b in json.loads(out.stdout)["backends"] if b["name"] == "runtime"][0]
    assert runtime_row["state"] == "failing" or "down since" in runtime_row.get("notice", ""), runtime_row
    # Back: imagelet reconnects by itself, and the next pod starts.
    n.start()
    assert wait_for(lambda: pull(server, REF, timeout=30) == ids["bb"], 30)
    image_ref = ensure_image_exists(stub, pb, REF, "Never")
    _, container, log = n.run_pod(image_ref, "pod-after-restart")
    assert n.wait_exit(container)
    assert "MARKER-front" in read_log(log)
    assert server.proc.poll() is None
    text = server.log()
    assert text.count("container runtime unavailable") == 1 and "container runtime reachable again" in text


def test_runtime_without_mirror_configuration_is_told_the_fix(store, front):
    """containerd with no hosts.toml goes to docker.io (no network here): the mirror saw nothing, so the answer and one log line say why."""
    layout, _ = store
    n, server = front(layout, mirror=False)
    t = time.monotonic()
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as e:
            ensure_image_exists(server.stub, server.pb, REF, "Never", timeout=60)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "never reached imagelet's mirror" in e.value.details() and "imagelet mirror-config containerd" in e.value.details()
    assert time.monotonic() - t < 30
    assert server.log().count("never reached imagelet's mirror") == 1


def test_a_pull_that_hangs_before_the_mirror_ends_at_mirror_wait(store, front):
    """hosts.toml names an address that accepts and never answers: the pull is ended after mirror_wait, not at kubelet's deadline."""
    layout, _ = store
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        n, server = front(layout, mirror=f"127.0.0.1:{silent.getsockname()[1]}", mirror_wait="1s")
        t = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            status(server, REF, timeout=60)
        took = time.monotonic() - t
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "within 1000 ms" in e.value.details()
    assert took < 10, took


def test_runtime_v1alpha2_clients_keep_working(store, front):
    import cri_stubs

    layout, ids = store
    n, server = front(layout)
    pb2, pbg2 = cri_stubs.load("v1alpha2")
    channel = grpc.insecure_channel(f"unix:{server.socket}")
    try:
        stub = pbg2.ImageServiceStub(channel)
        assert stub.ImageStatus(pb2.ImageStatusRequest(image=pb2.ImageSpec(image=REF)), timeout=60).image.id == ids["bb"]
        assert stub.PullImage(pb2.PullImageRequest(image=pb2.ImageSpec(image=REF)), timeout=60).image_ref == ids["bb"]
        assert ids["bb"] in {i.id for i in stub.ListImages(pb2.ListImagesRequest(), timeout=30).images}
        assert ids["bb"] in ids_in(n.images, n.pb)
    finally:
        channel.close()


def test_reload_keeps_front_mode(store, front):
    """SIGHUP builds a new registry with a new runtime client; the mirror's counts and the runtime's images carry over."""
    import signal

    layout, ids = store
    n, server = front(layout, name="node-reload")
    stub, pb = server.stub, server.pb
    ensure_image_exists(stub, pb, REF, "IfNotPresent")
    n.images.RemoveImage(n.pb.RemoveImageRequest(image=n.pb.ImageSpec(image=ids["bb"])), timeout=60)
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: server.log().count('msg="reloaded"') == 1, 20), server.log()
    # Removed behind imagelet's back: asked again, the runtime pulls it again through the same mirror.
    assert ensure_image_exists(stub, pb, REF, "Never") == ids["bb"]
    assert ids["bb"] in ids_in(n.images, n.pb)
    assert server.log().count(PULLED) == 2
