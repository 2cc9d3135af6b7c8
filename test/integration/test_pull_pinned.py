"""PullImage on a preloaded device, and Image.pinned (pinned_images, read-only
stores, embedded images), through the compiled binary and a C-core client."""
import os
import shutil

import grpc
import pytest

import cri_stubs
from conftest import EXAMPLES, FIXTURES, expected, oci_backend, run_cli

E = expected()
HELLO = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "1.0")
SECOND = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "2.0")
ISULAD = os.path.join(FIXTURES, "isulad")
HANDLER = "kata"  # KEP-4216: every call carries it; one view serves every handler


def writable_copy(workdir, name="oci-umoci"):
    dst = os.path.join(workdir, name)
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def pull(server, ref, handler=HANDLER, pb=None, stub=None):
    pb = pb or server.pb
    stub = stub or server.stub
    req = pb.PullImageRequest(image=pb.ImageSpec(image=ref, runtime_handler=handler) if handler is not None else pb.ImageSpec(image=ref))
    # Auth and the sandbox config are accepted and ignored.
    req.auth.username, req.auth.password = "user", "secret"
    req.sandbox_config.metadata.name = "pod"
    return stub.PullImage(req, timeout=10)


@pytest.fixture
def server(serve):
    return serve(oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="umoci"))


@pytest.mark.parametrize(
    "ref",
    [
        "localhost/oci-umoci:1.0",  # tag
        "localhost/oci-umoci",  # no tag: :latest
        "example.com/edge/hello:1.0",
        f"localhost/oci-umoci@{HELLO['entryDigest']}",  # name@digest
        f"example.com/edge/hello:any@{HELLO['entryDigest']}",  # name:tag@digest: the digest decides
        HELLO["id"],  # ID
        HELLO["id"][7:],  # bare hex ID
        HELLO["id"][7:19],  # ID prefix
    ],
)
def test_pull_of_a_present_image_answers_its_id(server, ref):
    r = pull(server, ref)
    assert r.image_ref == HELLO["id"]
    # What kubelet does next: ImageStatus of the same reference finds the same ID.
    assert server.image_status(ref).image.id == r.image_ref


def test_pull_of_a_short_name_on_the_sample_store(serve):
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    for ref in ("edge-tools:2.0", "docker.io/library/edge-tools:2.0", "library/edge-tools:2.0"):
        assert pull(s, ref).image_ref == s.image_status("edge-tools:2.0").image.id


@pytest.mark.parametrize(
    "ref",
    [
        "busybox:1.36",
        "localhost/oci-umoci:9.9",
        "localhost/oci-umoci@sha256:" + "0" * 64,
        "sha256:" + "f" * 64,
        "fffffff",
    ],
)
def test_pull_of_an_absent_image_is_not_found_and_says_how_to_preload(server, ref):
    with pytest.raises(grpc.RpcError) as err:
        pull(server, ref)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    details = err.value.details()
    assert f'"{ref}"' in details
    assert "does not fetch" in details and "skopeo copy" in details


@pytest.mark.parametrize("ref", ["", "Not/A Ref", "busybox:1 ", "a" * 5000, "busybox@sha256:short"])
def test_pull_of_a_malformed_reference_is_invalid_argument(server, ref):
    with pytest.raises(grpc.RpcError) as err:
        pull(server, ref)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_call_accepts_a_runtime_handler(server):
    pb = server.pb
    spec = pb.ImageSpec(image="localhost/oci-umoci:1.0", runtime_handler=HANDLER, user_specified_image="hello")
    assert server.stub.ImageStatus(pb.ImageStatusRequest(image=spec), timeout=10).image.id == HELLO["id"]
    assert [i.id for i in server.stub.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=spec)), timeout=10).images] == [HELLO["id"]]
    assert server.stub.PullImage(pb.PullImageRequest(image=spec), timeout=10).image_ref == HELLO["id"]
    streamed = [i.id for r in server.stub.StreamImages(pb.StreamImagesRequest(filter=pb.ImageFilter(image=spec)), timeout=10) for i in r.images]
    assert streamed == [HELLO["id"]]
    # RemoveImage of an absent image is OK whatever the handler.
    server.stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="absent:1", runtime_handler=HANDLER)), timeout=10)


def test_pull_and_remove_on_v1alpha2(serve, workdir):
    s = serve(oci_backend(writable_copy(workdir), name="umoci", writable=True))
    pb, pbg = cri_stubs.load("v1alpha2")
    stub = pbg.ImageServiceStub(s.channel)
    assert stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="localhost/oci-umoci:2.0")), timeout=10).image_ref == SECOND["id"]
    with pytest.raises(grpc.RpcError) as err:
        stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="nothere:1")), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="localhost/oci-umoci:2.0")), timeout=10)
    assert not s.image_status(SECOND["id"]).HasField("image")


# --- pinned ------------------------------------------------------------------------------


def pinned_of(server):
    return {i.id: i.pinned for i in server.list_images()}


@pytest.mark.parametrize(
    "pattern,hello,second",
    [
        ("localhost/oci-umoci:2.0", False, True),  # exact
        ("localhost/oci-umoci", True, False),  # exact, normalized to :latest (hello's tag)
        ("EXAMPLE.com/edge/*", True, False),  # glob, case-insensitive
        ("*umoci*", True, True),  # keyword
        ("*nothing*", False, False),
    ],
)
def test_pinned_by_pattern_on_a_writable_store(serve, workdir, pattern, hello, second):
    s = serve(f'pinned_images = ["{pattern}"]\n' + oci_backend(writable_copy(workdir), name="umoci", writable=True))
    assert pinned_of(s) == {HELLO["id"]: hello, SECOND["id"]: second}
    # ImageStatus says the same as ListImages.
    assert s.image_status(HELLO["id"]).image.pinned is hello


def test_pinned_by_digest_pattern(serve, workdir):
    s = serve(f'pinned_images = ["example.com/edge/hello@{HELLO["entryDigest"]}"]\n' + oci_backend(writable_copy(workdir), name="umoci", writable=True))
    assert pinned_of(s) == {HELLO["id"]: True, SECOND["id"]: False}


def test_every_image_of_a_read_only_store_is_pinned(serve, workdir):
    # The same layout twice: read-only (the default) and writable; an image held by both is pinned.
    s = serve(oci_backend(os.path.join(FIXTURES, "oci-skopeo-noref"), name="ro") + oci_backend(writable_copy(workdir), name="rw", writable=True))
    assert pinned_of(s) == {HELLO["id"]: False, SECOND["id"]: True}


def test_embedded_images_are_pinned(serve):
    s = serve(f'[[backend]]\ntype = "isulad"\npath = "{ISULAD}/graph"\nembedded_manifests = "{ISULAD}/embedded"\n')
    images = s.list_images()
    embedded = [i for i in images if i.id in {e["id"] for e in expected_isulad()["embedded"]}]
    assert embedded and all(i.pinned for i in embedded)


def expected_isulad():
    import json

    with open(os.path.join(ISULAD, "expected.json")) as f:
        return json.load(f)


def test_bad_pinned_images_is_a_config_error(workdir):
    config = os.path.join(workdir, "bad.toml")
    with open(config, "w") as f:
        f.write('pinned_images = ["a*b"]\n')
    out = run_cli("images", "--config", config)
    assert out.returncode == 2 and "pinned_images" in out.stderr and '"a*b"' in out.stderr


def test_cli_pinned_column_and_json(workdir):
    config = os.path.join(workdir, "c.toml")
    with open(config, "w") as f:
        f.write('pinned_images = ["localhost/oci-umoci:2.0"]\n' + oci_backend(writable_copy(workdir), name="umoci", writable=True))
    table = run_cli("images", "--pinned", "--config", config)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE", "PINNED"]
    rows = {tuple(l.split()[:2]): l.split()[-1] for l in lines[1:]}
    assert rows[("localhost/oci-umoci", "2.0")] == "true"
    assert rows[("localhost/oci-umoci", "1.0")] == "false"
    assert "PINNED" not in run_cli("images", "--config", config).stdout
    import json

    data = json.loads(run_cli("images", "-o", "json", "--config", config).stdout)
    assert {i["id"]: i["pinned"] for i in data["images"]} == {HELLO["id"]: False, SECOND["id"]: True}
    assert "pinned: true" in run_cli("images", "-o", "yaml", "--config", config).stdout


def test_cli_pull_mirrors_crictl(serve, workdir):
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    out = run_cli("pull", "edge-tools:2.0", env={"IMAGELET_ENDPOINT": f"unix://{s.socket}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"Image is up to date for {s.image_status('edge-tools:2.0').image.id}\n"
    absent = run_cli("pull", "busybox", env={"IMAGELET_ENDPOINT": f"unix://{s.socket}"})
    assert absent.returncode == 1 and "does not fetch" in absent.stderr


def test_sighup_applies_a_changed_pinned_images(serve, workdir):
    import signal
    import time

    s = serve('pinned_images = ["*nothing*"]\n' + oci_backend(writable_copy(workdir), name="umoci", writable=True))
    assert pinned_of(s) == {HELLO["id"]: False, SECOND["id"]: False}
    with open(s.config) as f:
        text = f.read()
    with open(s.config, "w") as f:
        f.write(text.replace('"*nothing*"', '"localhost/oci-umoci:2.0"'))
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while 'msg="reloaded"' not in s.log() and time.time() < deadline:
        time.sleep(0.05)
    assert pinned_of(s) == {HELLO["id"]: False, SECOND["id"]: True}
