"""Front mode with real parts: kubelet's image endpoint is imagelet, whose
[runtime] endpoint is Debian's containerd 1.6 (CRI plugin, runc) on a temp root.
Until imagelet's mirror lands, Debian's docker-registry (distribution 2.8) with
the same images pushed by skopeo is the mirror containerd's hosts.toml names.

Each pull policy runs kubelet's EnsureImageExists against imagelet, then a
host-network pod on containerd whose container prints its marker; each on a
fresh runtime root. Also: one view of both image sets, RemoveImage,
ImageFsInfo, the runtime down (UNAVAILABLE naming it, the stores served) and
back (reconnected), a runtime with no mirror configuration."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

from conftest import ROOT, oci_backend, run_cli

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from front_node import SANDBOX, DistributionRegistry, Layout, NeverPull, Node, ensure_image_exists, marker_image, pause_image, read_log, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("containerd", "runc", "docker-registry", "skopeo")) or not os.path.exists("/bin/busybox"),
    reason="needs root, containerd, runc, docker-registry, skopeo and busybox-static",
)

REF = "docker.io/library/front-bb:1.0"


@pytest.fixture
def images(workdir):
    """An OCI layout (the preloaded store): a marker image and the sandbox image; pushed to a stand-in mirror."""
    layout = os.path.join(workdir, "store")
    lay = Layout(layout)
    ids = {"bb": marker_image(lay, "front-bb-1.0", "MARKER-front"), "pause": pause_image(lay, "pause")}
    # The layout's ref.name is the tag; the image's full names come from `name`-style annotations below.
    registry = DistributionRegistry(os.path.join(workdir, "registry"))
    registry.start()
    try:
        registry.push(layout, "front-bb-1.0", "library/front-bb:1.0")
        registry.push(layout, "pause", "library/pause:front")
        yield layout, ids, registry
    finally:
        registry.stop()


def full_names(layout):
    """Give the layout's entries full reference names (what `skopeo copy docker://REF oci:DIR:REF` writes)."""
    import json

    path = os.path.join(layout, "index.json")
    with open(path) as f:
        index = json.load(f)
    for m in index["manifests"]:
        tag = m["annotations"]["org.opencontainers.image.ref.name"]
        m["annotations"]["org.opencontainers.image.ref.name"] = {"front-bb-1.0": REF, "pause": SANDBOX}[tag]
    with open(path, "w") as f:
        json.dump(index, f)


@pytest.fixture
def node(workdir, images):
    layout, ids, registry = images
    full_names(layout)
    nodes = []

    def make(name="node", mirror=True):
        n = Node(os.path.join(workdir, name), mirror=registry.addr if mirror else None)
        nodes.append(n)
        n.start()
        return n

    yield make
    for n in nodes:
        n.stop()


def front_config(layout, endpoint, extra=""):
    return f'[runtime]\nendpoint = "{endpoint}"\ntimeout = "3s"\n{extra}\n' + oci_backend(layout, name="preloaded")


def push_other(workdir, registry, marker, name):
    """An image in no store, pushed to the mirror stand-in as `name` (as any registry would have it); returns its ID."""
    where = os.path.join(workdir, f"other-{marker}")
    image_id = marker_image(Layout(where), "x", marker)
    registry.push(where, "x", name)
    return image_id


def ids_in(stub, pb):
    return {i.id: i for i in stub.ListImages(pb.ListImagesRequest(), timeout=30).images}


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_each_pull_policy_starts_the_container_from_a_preloaded_image(policy, images, node, serve):
    layout, ids, _ = images
    n = node(f"node-{policy}")
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
    # Not in the runtime yet: imagelet lists it (from the store), pinned: nothing to remove.
    listed = ids_in(stub, pb)
    assert listed[ids["bb"]].pinned
    assert ids["bb"] not in ids_in(n.images, n.pb)
    image_ref = ensure_image_exists(stub, pb, REF, policy)
    assert image_ref == ids["bb"]
    # The runtime holds it now (pulled through the mirror), under the same ID.
    theirs = ids_in(n.images, n.pb)
    assert ids["bb"] in theirs and REF in theirs[ids["bb"]].repo_tags
    _, container, log = n.run_pod(image_ref, f"pod-{policy.lower()}")
    assert n.wait_exit(container), open(n.log_path).read()[-3000:]
    assert "MARKER-front" in read_log(log)
    # One entry, names merged; the runtime's copy makes it removable.
    merged = ids_in(stub, pb)[ids["bb"]]
    assert REF in merged.repo_tags and not merged.pinned
    assert "the runtime pulled a preloaded image from the mirror" in open(server.log_path).read()


def test_concurrent_status_calls_share_one_pull(images, node, serve):
    import concurrent.futures

    layout, ids, _ = images
    n = node()
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=REF)), timeout=60).image.id, range(8)))
    assert answers == [ids["bb"]] * 8
    assert open(server.log_path).read().count("the runtime pulled a preloaded image from the mirror") == 1


def test_one_view_remove_and_image_fs_info(images, node, serve, workdir, request):
    layout, ids, registry = images
    n = node()
    # An image only the runtime has (pulled by it directly, as from any registry).
    other_id = push_other(workdir, registry, "MARKER-other", "library/runtime-only:2")
    n.images.PullImage(n.pb.PullImageRequest(image=n.pb.ImageSpec(image="docker.io/library/runtime-only:2")), timeout=60)
    # The store on another filesystem (tmpfs) than the runtime's root, so ImageFsInfo's order shows.
    shm = tempfile.mkdtemp(prefix="imagelet-front-", dir="/dev/shm")
    request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))
    layout = shutil.copytree(layout, os.path.join(shm, "store"))
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
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
    after = ids_in(stub, pb)
    assert after[ids["bb"]].pinned
    # A runtime-only image goes from the runtime, and so from the view.
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="docker.io/library/runtime-only:2")), timeout=60)
    assert other_id not in ids_in(n.images, n.pb) and other_id not in ids_in(stub, pb)


def test_pull_of_an_image_in_no_store_is_forwarded(images, node, serve, workdir):
    layout, ids, registry = images
    n = node()
    other_id = push_other(workdir, registry, "MARKER-forwarded", "library/online:3")
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
    ref = stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="online:3")), timeout=60).image_ref
    assert ref == other_id
    assert ids_in(stub, pb)[other_id].repo_tags == ["docker.io/library/online:3"]
    # Listed now, but only the runtime's: Always's PullImage is still the runtime's pull (it sees a new tag's image).
    newer = push_other(workdir, registry, "MARKER-newer", "library/online:3")
    assert stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="online:3")), timeout=60).image_ref == newer
    # A name the runtime cannot find: its error, named.
    with pytest.raises(grpc.RpcError) as e:
        stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="nowhere:1")), timeout=60)
    assert n.endpoint in e.value.details()


def test_runtime_down_and_back(images, node, serve):
    layout, ids, _ = images
    n = node()
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
    ensure_image_exists(stub, pb, REF, "IfNotPresent")
    n.stop_daemon()
    # Stores still served; a forwarded call answers UNAVAILABLE naming the runtime.
    assert ids["bb"] in ids_in(stub, pb)
    assert stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=REF)), timeout=30).image.id == ids["bb"]
    with pytest.raises(grpc.RpcError) as e:
        stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="docker.io/library/elsewhere:1")), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and n.endpoint in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=REF)), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and n.endpoint in e.value.details()
    assert stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    out = run_cli("plugins", "--endpoint", f"unix://{server.socket}", "-o", "json")
    assert '"runtime"' in out.stdout and "down since" in out.stdout, out.stdout + out.stderr
    # Back: imagelet reconnects by itself, and the next pod starts.
    n.start()
    assert wait_for(lambda: stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=REF)), timeout=30).image_ref == ids["bb"], 30)
    image_ref = ensure_image_exists(stub, pb, REF, "Never")
    _, container, log = n.run_pod(image_ref, "pod-after-restart")
    assert n.wait_exit(container)
    assert "MARKER-front" in read_log(log)
    assert server.proc.poll() is None
    text = open(server.log_path).read()
    assert text.count("container runtime unavailable") == 1 and "container runtime reachable again" in text


def test_runtime_without_mirror_configuration_fails_clearly(images, node, serve):
    """containerd with no hosts.toml pulls from docker.io (no network here): the error names the image and the mirror, fast."""
    layout, ids, _ = images
    n = node(mirror=False)
    server = serve(front_config(layout, n.endpoint))
    stub, pb = server.stub, server.pb
    t = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        ensure_image_exists(stub, pb, REF, "Never", timeout=60)
    assert time.monotonic() - t < 30
    assert "imagelet's mirror" in e.value.details() and REF in e.value.details(), e.value.details()


def test_runtime_v1alpha2_clients_keep_working(images, node, serve):
    import cri_stubs

    layout, ids, _ = images
    n = node()
    server = serve(front_config(layout, n.endpoint))
    pb2, pbg2 = cri_stubs.load("v1alpha2")
    stub = pbg2.ImageServiceStub(grpc.insecure_channel(f"unix:{server.socket}"))
    assert stub.ImageStatus(pb2.ImageStatusRequest(image=pb2.ImageSpec(image=REF)), timeout=60).image.id == ids["bb"]
    assert stub.PullImage(pb2.PullImageRequest(image=pb2.ImageSpec(image=REF)), timeout=60).image_ref == ids["bb"]
    assert ids["bb"] in {i.id for i in stub.ListImages(pb2.ListImagesRequest(), timeout=30).images}
