"""CRI runtime.v1 ImageService through the compiled binary and a C-core client."""
import json
import os
import shutil
import subprocess

import grpc
import pytest

from conftest import EXAMPLES, FIXTURES, expected, fixture_backends, oci_backend

E = expected()
HELLO = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "1.0")
SECOND = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "2.0")
NOREF = next(e for e in E if e["layout"] == "oci-skopeo-noref")
MULTI = next(e for e in E if e["layout"] == "oci-multi")


@pytest.fixture
def server(serve):
    return serve(fixture_backends())


def by_id(images):
    return {i.id: i for i in images}


def assert_invalid(call, needle):
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert needle in err.value.details(), err.value.details()


# --- ListImages ---------------------------------------------------------------


def test_list_images_agrees_with_skopeo(server):
    images = by_id(server.list_images())
    # skopeo sees the same config in oci-umoci:2.0 and oci-skopeo-noref: one image.
    assert SECOND["id"] == NOREF["id"]
    assert set(images) == {HELLO["id"], SECOND["id"], MULTI["id"]}
    hello = images[HELLO["id"]]
    assert sorted(hello.repo_tags) == [
        "example.com/edge/hello:1.0", "localhost/oci-umoci:1.0", "localhost/oci-umoci:latest",
    ]
    assert sorted(hello.repo_digests) == sorted(
        f"{repo}@{HELLO['entryDigest']}" for repo in ("example.com/edge/hello", "localhost/oci-umoci")
    )
    assert hello.size == HELLO["size"]
    assert hello.username == "app" and not hello.HasField("uid")
    second = images[SECOND["id"]]
    assert list(second.repo_tags) == ["localhost/oci-umoci:2.0"]
    assert second.uid.value == 1000 and second.username == ""
    multi = images[MULTI["id"]]
    assert list(multi.repo_tags) == ["example.com/edge/multi:1.0"]
    assert list(multi.repo_digests) == [f"example.com/edge/multi@{MULTI['entryDigest']}"]
    assert multi.size == MULTI["size"]
    assert multi.username == "root"
    assert all(i.size > 0 for i in images.values())


def test_list_images_empty_filter_is_everything(server):
    assert len(server.list_images("")) == 3
    assert len(server.list_images()) == 3


@pytest.mark.parametrize(
    "ref,ids",
    [
        ("example.com/edge/hello:1.0", [HELLO["id"]]),
        ("localhost/oci-umoci", [HELLO["id"], SECOND["id"]]),  # a repository: all its images
        ("localhost/oci-umoci:2.0", [SECOND["id"]]),
        (HELLO["id"], [HELLO["id"]]),
        (HELLO["id"][7:19], [HELLO["id"]]),
        (f"example.com/edge/multi@{MULTI['entryDigest']}", [MULTI["id"]]),
        ("busybox", []),
        ("fffffff", []),
    ],
)
def test_list_images_filter(server, ref, ids):
    assert [i.id for i in server.list_images(ref)] == ids


def test_list_images_malformed_filter(server):
    assert_invalid(lambda: server.list_images("Not/A Ref"), '"Not/A Ref"')


# --- ImageStatus --------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "localhost/oci-umoci:1.0",
        "localhost/oci-umoci:latest",
        "example.com/edge/hello:1.0",
        HELLO["id"],
        HELLO["id"][7:],  # bare 64 hex
        HELLO["id"][7:12],  # prefix
        "sha256:" + HELLO["id"][7:12],
        f"localhost/oci-umoci@{HELLO['entryDigest']}",
        f"example.com/edge/hello:whatever@{HELLO['entryDigest']}",
    ],
)
def test_image_status_resolves(server, ref):
    r = server.image_status(ref)
    assert r.HasField("image")
    assert r.image.id == HELLO["id"]
    assert r.image.size == HELLO["size"]
    assert r.image.username == "app"
    assert len(r.info) == 0  # not verbose


def test_image_status_short_name(serve):
    # The sample store has edge-tools:2.0, which normalizes to docker.io/library/edge-tools:2.0.
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    for ref in ("edge-tools:2.0", "docker.io/library/edge-tools:2.0", "library/edge-tools:2.0"):
        r = s.image_status(ref)
        assert list(r.image.repo_tags) == ["docker.io/library/edge-tools:2.0"], ref
        assert r.image.username == "nobody"
    assert not s.image_status("edge-tools").HasField("image")  # :latest is not there


def test_image_status_not_found_is_ok_with_image_unset(server):
    for ref in ("nothere", "example.com/edge/hello:9", "sha256:" + "f" * 64, "fffff"):
        r = server.image_status(ref)
        assert not r.HasField("image"), ref


@pytest.mark.parametrize(
    "ref,needle",
    [
        ("", '""'),
        ("upper/Case", '"upper/Case"'),
        ("../../etc/passwd", '"../../etc/passwd"'),
        ("a b", '"a b"'),
        ("bad\nline", '"bad\\nline"'),
    ],
)
def test_image_status_malformed_is_invalid_argument(server, ref, needle):
    assert_invalid(lambda: server.image_status(ref), needle)


def write_layout_with_colliding_prefix(path):
    """An OCI layout of small images, grown until two IDs share a 3-hex prefix."""
    import hashlib

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return digest

    os.makedirs(os.path.join(path, "blobs", "sha256"))
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    seen, manifests = {}, []
    for n in range(5000):
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": str(n)}},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cid = put(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cid, "size": len(config)},
                               "layers": []}).encode()
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + put(manifest),
                          "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": f"n{n}"}})
        if cid[:3] in seen:
            with open(os.path.join(path, "index.json"), "w") as f:
                json.dump({"schemaVersion": 2, "manifests": manifests}, f)
            return cid[:3], seen[cid[:3]], cid
        seen[cid[:3]] = cid
    raise AssertionError("no 3-hex collision in 5000 images")


def test_image_status_ambiguous_prefix_is_invalid_argument(serve, workdir):
    layout = os.path.join(workdir, "colliding")
    prefix, first, second = write_layout_with_colliding_prefix(layout)
    s = serve(oci_backend(layout))
    assert_invalid(lambda: s.image_status(prefix), f'"{prefix}"')
    assert_invalid(lambda: s.image_status("sha256:" + prefix), "ambiguous")
    # One more character than the two share (if they differ there) is unique again.
    longer = first[: next(i for i in range(64) if first[i] != second[i]) + 1]
    assert s.image_status(longer).image.id == "sha256:" + first
    # The ListImages filter returns every image the prefix selects.
    assert sorted(i.id for i in s.list_images(prefix)) == sorted(["sha256:" + first, "sha256:" + second])


def test_image_status_verbose_has_image_spec(server):
    r = server.image_status("example.com/edge/hello:1.0", verbose=True)
    info = json.loads(r.info["info"])
    config = json.loads(
        subprocess.run(
            ["cat", os.path.join(FIXTURES, "oci-umoci", "blobs", "sha256", HELLO["id"][7:])],
            check=True, capture_output=True,
        ).stdout
    )
    assert info["imageSpec"] == config
    assert info["imageSpec"]["config"]["User"] == "app"
    assert info["chainID"].startswith("sha256:")
    assert r.image.spec.annotations["org.example.note"] == "manifest-annotation"


def test_pull_of_an_absent_image_says_how_to_preload(server):
    pb = server.pb
    with pytest.raises(grpc.RpcError) as err:
        server.stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="busybox:1.36")), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert '"busybox:1.36"' in err.value.details() and "Preload" in err.value.details()
    # Empty references are the client's error, for both calls.
    for call, req in ((server.stub.PullImage, pb.PullImageRequest()), (server.stub.RemoveImage, pb.RemoveImageRequest())):
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_store_change_is_visible_without_restart(serve, workdir):
    layout = os.path.join(workdir, "layout")
    shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), layout)
    s = serve(oci_backend(layout))
    assert len(s.list_images()) == 2
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    index["manifests"] = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] != "2.0"]
    tmp = os.path.join(layout, "index.json.tmp")
    with open(tmp, "w") as f:
        json.dump(index, f)
    os.rename(tmp, os.path.join(layout, "index.json"))  # atomic replace, as tools do
    import time

    deadline = time.time() + 5
    while time.time() < deadline and len(s.list_images()) != 1:
        time.sleep(0.05)
    assert [i.id for i in s.list_images()] == [HELLO["id"]]
    assert not s.image_status("localhost/layout:2.0").HasField("image")


@pytest.mark.parametrize("method", ["ImageStatus", "ListImages"])
@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\x0a\xff"])
def test_undecodable_request_is_invalid_argument_naming_the_message(server, method, payload):
    raw = server.channel.unary_unary(
        f"/runtime.v1.ImageService/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as err:
        raw(payload, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"malformed runtime.v1.{method}Request: ")
    # The server is still there for the next, well-formed call.
    assert len(server.list_images()) == 3


def test_request_over_4_mib_is_resource_exhausted_and_others_are_served(serve):
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    big = grpc.insecure_channel(f"unix:{s.socket}", options=[("grpc.max_send_message_length", 64 << 20)])
    raw = big.unary_unary("/runtime.v1.ImageService/ImageStatus", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    image = b"a" * (5 << 20)
    spec = b"\x0a" + bytes([0x80, 0x80, 0xC0, 0x02]) + image  # ImageSpec{image: 5 MiB}, varint length 5242880
    request = b"\x0a" + bytes([0x85, 0x80, 0xC0, 0x02]) + spec
    with pytest.raises(grpc.RpcError) as err:
        raw(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    big.close()
    assert len(s.list_images()) == 2
