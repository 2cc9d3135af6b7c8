"""StreamImages (runtime.v1, CRIListStreaming) through the compiled binary."""
import os

import grpc
import pytest

from conftest import EXAMPLES, oci_backend
from synthetic import write_layout

N = 5001  # one full batch of 5000 and one of 1


@pytest.fixture(scope="module")
def big_layout(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stream") / "layout")
    ids = write_layout(path, N)
    return path, ids


def stream(server, filter_ref=None, timeout=30):
    req = server.pb.StreamImagesRequest()
    if filter_ref is not None:
        req.filter.image.image = filter_ref
    return server.stub.StreamImages(req, timeout=timeout)


def test_batches_hold_every_image_once(serve, big_layout):
    path, ids = big_layout
    s = serve(oci_backend(path))
    batches = [list(r.images) for r in stream(s)]
    assert [len(b) for b in batches] == [5000, 1]
    streamed = [i.id for b in batches for i in b]
    assert len(streamed) == len(set(streamed)) == N
    assert set(streamed) == {"sha256:" + i for i in ids}
    # The same images and fields as ListImages.
    listed = {i.id: i for i in s.list_images()}
    for b in batches:
        for image in b:
            assert image == listed[image.id]


def test_filter_and_zero_images(serve):
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    assert [i.id for r in stream(s, "example.com/edge/hello") for i in r.images] == [i.id for i in s.list_images("example.com/edge/hello")]
    assert len(list(stream(s, "example.com/edge/hello"))) == 1
    # No image: no message at all, and a clean end of stream.
    assert list(stream(s, "nothing/here:1")) == []
    with pytest.raises(grpc.RpcError) as err:
        list(stream(s, "Not A Ref"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_after_first_batch_leaves_the_server_serving(serve, big_layout):
    path, _ = big_layout
    s = serve(oci_backend(path))
    for _ in range(3):
        call = stream(s)
        first = next(call)
        assert len(first.images) == 5000
        call.cancel()
        with pytest.raises(grpc.RpcError) as err:
            list(call)
        assert err.value.code() == grpc.StatusCode.CANCELLED
    assert len(s.list_images()) == N
    assert "internal error" not in s.log()
