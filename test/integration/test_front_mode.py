"""Front mode, end to end: kubelet's image endpoint is imagelet, whose [runtime]
endpoint is Debian's containerd 1.6 (CRI plugin, runc) on a fresh temporary root
(test/integration/node_runtime.py), and whose [mirror] is what containerd's
hosts.toml names (what `imagelet mirror-config containerd` prints). kubelet
1.26's image sequence runs against imagelet, the ID it returns goes to
containerd's CreateContainer, and the container prints its marker. The sandbox
(pause) image comes from the same store through the mirror, pulled by
containerd itself. Every client runs with the canary proxy: a request that
leaves loopback fails the test.

Covered: each pull policy, each on a fresh root; an image of each store kind;
one shared pull; one view of both image sets; RemoveImage; ImageFsInfo;
forwarded pulls (images in no store, from a distribution registry named by
address); the runtime down (UNAVAILABLE naming it, the stores served) and back;
a runtime with no mirror configuration and one whose mirror never answers (one
log line with the fix); SIGHUP; runtime.v1alpha2."""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

import cri_stubs
from conftest import ROOT, oci_backend, run_cli
from daemons import Distribution
from mirror_client import mirror_address, wait_for
from node_runtime import (  # noqa: F401  (canary, nothing_goes_past_the_mirror: fixtures)
    PAUSE, STORE_KINDS, ContainerdNode, canary, ensure_image, marker, needs_node, nothing_goes_past_the_mirror, record, stop_group,
)

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from busybox_images import Layout, marker_image  # noqa: E402

pytestmark = needs_node
PULLED = "the runtime pulled a preloaded image from the mirror"
KIND = "oci-layout"


class Front:
    """A node and imagelet in front of it: containerd first (its socket is imagelet's [runtime]), then imagelet
    with its mirror on a port the system chooses, then the hosts.toml mirror-config prints for that port."""

    def __init__(self, tmp_path, serve, canary, backends, mirror=True, mirror_wait=None, name="node", top=""):
        self.node = ContainerdNode(tmp_path / name, sandbox_image=PAUSE, env=canary.env)
        wait = f'mirror_wait = "{mirror_wait}"\n' if mirror_wait else ""
        config = top + backends + f'[mirror]\nlisten = "127.0.0.1:0"\n[runtime]\nendpoint = "unix://{self.node.socket}"\ntimeout = "3s"\n{wait}'
        self.server = serve(config, subdir=f"imagelet-{name}")
        assert wait_for(lambda: "serving the registry mirror" in self.server.log()), self.server.log()[-2000:]
        host, port = mirror_address(self.server)
        self.mirror = f"{host}:{port}"
        if mirror is True:
            self.node.write_hosts_toml(self.printed())
        elif mirror:
            # Another address as the only registry (`server`: nothing past it).
            self.node.write_hosts_toml(f'server = "http://{mirror}"\n[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n')

    def printed(self):
        out = run_cli("mirror-config", "containerd", "--config", self.server.config, "--listen", self.mirror)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def ensure(self, ref, policy, pod=None, calls=None, timeout=60):
        """kubelet's EnsureImageExists against imagelet's socket."""
        return ensure_image(self.server.socket, ref, policy, sandbox_config=pod.config if pod else None, calls=calls, timeout=timeout)

    def runs(self, pod, name, image_id, text):
        self.node.start_container(pod, name, image_id)
        self.node.wait_log(pod, name, text)

    def close(self):
        self.node.close()


@pytest.fixture
def front(tmp_path, serve, canary):
    made = []

    def make(backends, **kw):
        f = Front(tmp_path, serve, canary, backends, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def answers(call):
    """The call's answer, or None while it fails (the runtime still restarting)."""
    try:
        return call()
    except grpc.RpcError:
        return None


def ids_in(stub, pb):
    return {i.id: i for i in stub.ListImages(pb.ListImagesRequest(), timeout=30).images}


def pull(server, ref, timeout=60):
    return server.stub.PullImage(server.pb.PullImageRequest(image=server.pb.ImageSpec(image=ref)), timeout=timeout).image_ref


def push_other(tmp_path, registry, text, name):
    """An image in no store (its own busybox image printing `text`), pushed to `registry` as `name`; returns its ID."""
    where = str(tmp_path / f"other-{text}")
    image_id = marker_image(Layout(where), "x", text)
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{where}:x", f"docker://{registry.host}/{name}"],
                   check=True, capture_output=True, timeout=120)
    return image_id


@pytest.fixture
def upstream(tmp_path):
    """A registry holding images no store has (distribution 2.8 on loopback), named by its address."""
    with Distribution(str(tmp_path / "upstream")).start() as registry:
        yield registry


# kubelet's calls to imagelet per policy, with the runtime lacking the image at first.
CALLS = {"Always": ["ImageStatus", "PullImage"], "IfNotPresent": ["ImageStatus"], "Never": ["ImageStatus"]}


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_each_pull_policy_starts_the_container_from_a_preloaded_image(policy, front, runnable_stores):
    f = front(runnable_stores.backend(KIND))
    want = runnable_stores.image_id(marker(KIND))
    stub, pb = f.server.stub, f.server.pb
    # imagelet lists it (from the store), pinned: nothing to remove; the runtime does not have it.
    assert ids_in(stub, pb)[want].pinned
    assert f.node.image_id(marker(KIND)) == ""
    pod = f.node.run_pod(f"pod-{policy.lower()}")
    calls = []
    image_id = f.ensure(marker(KIND), policy, pod, calls)
    assert (image_id, calls) == (want, CALLS[policy])
    # The runtime holds it now, pulled from imagelet's mirror, under the same ID: CreateContainer finds it.
    assert f.node.image_id(marker(KIND)) == want
    f.runs(pod, "marker", image_id, f"imagelet-marker-{KIND}")
    # One entry, names merged; the runtime's copy makes it removable.
    merged = ids_in(stub, pb)[want]
    assert marker(KIND) in merged.repo_tags and not merged.pinned
    assert f.server.log().count(PULLED) == 1
    record(runtime="containerd 1.6", mode="front", policy=f"{policy} (fresh root)", kind=KIND, started=True)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_pod_starts_from_a_preloaded_image_of_each_store_kind(kind, front, runnable_stores):
    f = front(runnable_stores.backend(kind))
    pod = f.node.run_pod(f"pod-{kind}")
    image_id = f.ensure(marker(kind), "Never", pod)
    assert image_id == runnable_stores.image_id(marker(kind)) == f.node.image_id(marker(kind))
    f.runs(pod, "marker", image_id, f"imagelet-marker-{kind}")
    record(runtime="containerd 1.6", mode="front", policy="Never (fresh root)", kind=kind, started=True)


def test_concurrent_status_calls_share_one_pull(front, runnable_stores):
    f = front(runnable_stores.backend(KIND))
    want = runnable_stores.image_id(marker(KIND))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: f.server.image_status(marker(KIND), timeout=60).image.id, range(8)))
    assert answers == [want] * 8
    assert f.server.log().count(PULLED) == 1


def test_one_view_remove_and_image_fs_info(front, runnable_stores, upstream, tmp_path, request):
    # The store on another filesystem (tmpfs) than the runtime's root, so ImageFsInfo's order shows.
    shm = tempfile.mkdtemp(prefix="imagelet-front-", dir="/dev/shm")
    request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))
    layout = shutil.copytree(runnable_stores.path(KIND), os.path.join(shm, "store"))
    # The runtime's images are listed again every poll_interval: 1 s, so the test need not wait 10.
    f = front(oci_backend(layout, name="preloaded"), top='poll_interval = "1s"\n')
    f.node.write_hosts_toml(f'server = "http://{upstream.host}"\n', host=upstream.host)
    stub, pb = f.server.stub, f.server.pb
    want = runnable_stores.image_id(marker(KIND))
    # An image only the runtime has (pulled by it directly, from a registry).
    other_ref = f"{upstream.host}/library/runtime-only:2"
    other_id = push_other(tmp_path, upstream, "runtime-only", "library/runtime-only:2")
    f.node.images.PullImage(f.node.pb.PullImageRequest(image=f.node.pb.ImageSpec(image=other_ref)), timeout=60)
    assert wait_for(lambda: other_id in ids_in(stub, pb), 20)
    listed = ids_in(stub, pb)
    assert {want, runnable_stores.image_id(PAUSE), other_id} <= set(listed)
    assert not listed[other_id].pinned
    # StreamImages: the same view.
    streamed = [i.id for r in stub.StreamImages(pb.StreamImagesRequest(), timeout=30) for i in r.images]
    assert sorted(streamed) == sorted(listed)
    f.ensure(marker(KIND), "IfNotPresent")
    # ImageFsInfo: the runtime's image filesystem first (where pulls land, what GC can free), then the store's.
    theirs = f.node.images.ImageFsInfo(f.node.pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    ours = stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    runtime_mount = subprocess.run(["stat", "-c", "%m", theirs[0].fs_id.mountpoint], capture_output=True, text=True).stdout.strip()
    assert [fs.fs_id.mountpoint for fs in ours] == [runtime_mount, "/dev/shm"]
    # RemoveImage (kubelet's GC): the runtime's copy goes, the preloaded image stays, pinned again.
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=want)), timeout=60)
    assert f.node.image_id(want) == ""
    assert ids_in(stub, pb)[want].pinned
    # Again: nothing left that imagelet may remove.
    with pytest.raises(grpc.RpcError) as e:
        stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=want)), timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A runtime-only image goes from the runtime, and so from the view.
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=other_ref)), timeout=60)
    assert f.node.image_id(other_ref) == "" and other_id not in ids_in(stub, pb)
    # The next start pulls the preloaded image again, from the mirror.
    assert f.ensure(marker(KIND), "Never") == want
    assert f.server.log().count(PULLED) == 2


def test_pull_of_an_image_in_no_store_is_forwarded(front, runnable_stores, upstream, tmp_path):
    f = front(runnable_stores.backend(KIND))
    f.node.write_hosts_toml(f'server = "http://{upstream.host}"\n', host=upstream.host)
    ref = f"{upstream.host}/library/online:3"
    first = push_other(tmp_path, upstream, "forwarded", "library/online:3")
    calls = []
    assert f.ensure(ref, "IfNotPresent", calls=calls) == first
    assert calls == ["ImageStatus", "PullImage"]
    assert ids_in(f.server.stub, f.server.pb)[first].repo_tags == [ref]
    # Listed now, but only the runtime's: Always's PullImage is still the runtime's pull (it sees the tag moved).
    newer = push_other(tmp_path, upstream, "newer", "library/online:3")
    assert f.ensure(ref, "Always") == newer
    pod = f.node.run_pod("pod-forwarded")
    f.runs(pod, "newer", newer, "newer")
    # A name nobody has: the runtime's error, naming the runtime.
    with pytest.raises(grpc.RpcError) as e:
        pull(f.server, f"{upstream.host}/library/nowhere:1")
    assert f.node.socket in e.value.details()
    record(runtime="containerd 1.6", mode="front", policy="IfNotPresent, then Always (tag moved)", kind="in no store: forwarded to the runtime's pull", started=True)


def test_runtime_down_and_back(front, runnable_stores):
    f = front(runnable_stores.backend(KIND))
    stub, pb, server = f.server.stub, f.server.pb, f.server
    want = runnable_stores.image_id(marker(KIND))
    f.ensure(marker(KIND), "IfNotPresent")
    f.node.channel.close()
    stop_group(f.node.proc)
    # Stores still served; calls that need the runtime answer UNAVAILABLE naming it.
    assert want in ids_in(stub, pb)
    assert server.image_status(marker(KIND)).image.id == want
    for call in (lambda: pull(server, "docker.io/library/elsewhere:1"), lambda: pull(server, marker(KIND)),
                 lambda: stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=marker(KIND))), timeout=30)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and f.node.socket in e.value.details(), e.value.details()
    assert stub.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    out = run_cli("plugins", "--endpoint", f"unix://{server.socket}", "-o", "json")
    row = [b for b in json.loads(out.stdout)["backends"] if b["name"] == "runtime"][0]
    assert "down since" in row.get("notice", ""), row
    # Back: imagelet reconnects by itself, and the next pod starts (Never: only ImageStatus).
    f.node.start()
    assert wait_for(lambda: answers(lambda: pull(server, marker(KIND), timeout=30)) == want, 30)
    pod = f.node.run_pod("pod-after-restart")
    image_id = f.ensure(marker(KIND), "Never", pod)
    f.runs(pod, "marker", image_id, f"imagelet-marker-{KIND}")
    assert server.proc.poll() is None
    text = server.log()
    assert text.count("container runtime unavailable") == 1 and "container runtime reachable again" in text
    record(runtime="containerd 1.6", mode="front", policy="Never, after containerd restarted", kind=KIND, started=True)


def test_runtime_without_mirror_configuration_is_told_the_fix(front, runnable_stores, canary):
    """containerd with no hosts.toml goes to the image's registry (refused by the canary): the mirror saw nothing,
    so the answer and one log line say why and what to run."""
    f = front(runnable_stores.backend(KIND), mirror=False)
    t = time.monotonic()
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as e:
            f.ensure(marker(KIND), "Never")
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert "never reached imagelet's mirror" in e.value.details() and "imagelet mirror-config containerd" in e.value.details()
    assert time.monotonic() - t < 30
    assert f.server.log().count("never reached imagelet's mirror") == 1
    assert [r for r in canary.take() if r.startswith("CONNECT example.com:443")], "containerd did not try the registry"
    record(runtime="containerd 1.6", mode="front, no mirror configuration", policy="Never", kind=KIND, started=False)


def test_a_pull_that_hangs_before_the_mirror_ends_at_mirror_wait(front, runnable_stores):
    """hosts.toml names an address that accepts and never answers: the pull ends after mirror_wait, not at kubelet's deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        f = front(runnable_stores.backend(KIND), mirror=f"127.0.0.1:{silent.getsockname()[1]}", mirror_wait="1s")
        t = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            f.server.image_status(marker(KIND), timeout=60)
        took = time.monotonic() - t
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "within 1000 ms" in e.value.details()
    assert took < 10, took


def test_reload_keeps_front_mode(front, runnable_stores):
    """SIGHUP builds a new registry with a new runtime client; the mirror's counts carry over."""
    f = front(runnable_stores.backend(KIND))
    want = runnable_stores.image_id(marker(KIND))
    f.ensure(marker(KIND), "IfNotPresent")
    f.node.images.RemoveImage(f.node.pb.RemoveImageRequest(image=f.node.pb.ImageSpec(image=want)), timeout=60)
    f.server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: f.server.log().count('msg="reloaded"') == 1), f.server.log()
    # Removed behind imagelet's back: asked again, the runtime pulls it again through the same mirror.
    assert f.ensure(marker(KIND), "Never") == want == f.node.image_id(want)
    assert f.server.log().count(PULLED) == 2


def test_runtime_v1alpha2_clients_keep_working(front, runnable_stores):
    f = front(runnable_stores.backend(KIND))
    want = runnable_stores.image_id(marker(KIND))
    pb2, pbg2 = cri_stubs.load("v1alpha2")
    with grpc.insecure_channel(f"unix:{f.server.socket}") as channel:
        stub = pbg2.ImageServiceStub(channel)
        assert stub.ImageStatus(pb2.ImageStatusRequest(image=pb2.ImageSpec(image=marker(KIND))), timeout=60).image.id == want
        assert stub.PullImage(pb2.PullImageRequest(image=pb2.ImageSpec(image=marker(KIND))), timeout=60).image_ref == want
        assert want in {i.id for i in stub.ListImages(pb2.ListImagesRequest(), timeout=30).images}
    assert f.node.image_id(marker(KIND)) == want
