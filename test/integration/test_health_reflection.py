"""grpc.health.v1 Health and gRPC server reflection (grpc.reflection.v1), spoken
in raw protobuf bytes by this test (Debian ships neither grpcurl nor the Python
reflection client), with the served file descriptors decoded by python3-protobuf."""
import os

import grpc
import pytest
from google.protobuf import descriptor_pb2

from conftest import EXAMPLES, oci_backend

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")
SERVING, NOT_SERVING = 1, 2


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fields(data):
    """(number, value) pairs of a message: ints for varints, bytes for length-delimited."""
    i, out = 0, []
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, value))
    return out


def read_varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def health_check(channel, service):
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    response = check(field(1, service.encode()) if service else b"", timeout=10)
    return dict(fields(response)).get(1, 0)


def reflect(channel, request):
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    return dict(fields(next(info(iter([request]), timeout=10))))


def test_health_serving_when_every_backend_loaded(serve):
    s = serve(SAMPLE)
    for service in ("", "runtime.v1.ImageService", "runtime.v1alpha2.ImageService"):
        assert health_check(s.channel, service) == SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health_check(s.channel, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_follows_a_backend_that_loads_late(serve, workdir):
    import time

    missing = os.path.join(workdir, "not-yet")
    s = serve('poll_interval = "200ms"\n' + SAMPLE + oci_backend(missing, name="later"))
    assert health_check(s.channel, "") == NOT_SERVING
    assert len(s.list_images()) == 2  # the loaded backend is served meanwhile
    os.symlink(os.path.join(EXAMPLES, "sample-oci"), missing)  # the store appears
    deadline = time.time() + 5
    while time.time() < deadline and health_check(s.channel, "") != SERVING:
        time.sleep(0.05)
    assert health_check(s.channel, "runtime.v1.ImageService") == SERVING


def test_reflection_lists_and_describes_the_image_services(serve):
    s = serve(SAMPLE)
    listed = reflect(s.channel, field(7, b"*"))  # list_services
    names = sorted(dict(fields(svc))[1].decode() for n, svc in fields(listed[6]) if n == 1)
    assert names == ["imagelet.v1.Diagnostics", "runtime.v1.ImageService", "runtime.v1alpha2.ImageService"]
    described = reflect(s.channel, field(4, b"runtime.v1.ImageService"))  # file_containing_symbol
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for n, raw in fields(described[4]) if n == 1]
    services = {f"{f.package}.{svc.name}": svc for f in files for svc in f.service}
    methods = {m.name: m for m in services["runtime.v1.ImageService"].method}
    assert {"ListImages", "ImageStatus", "StreamImages", "ImageFsInfo", "PullImage", "RemoveImage"} <= set(methods)
    assert methods["StreamImages"].server_streaming
    image = next(m for f in files for m in f.message_type if m.name == "Image")
    assert [(fd.name, fd.number) for fd in image.field][:4] == [("id", 1), ("repo_tags", 2), ("repo_digests", 3), ("size", 4)]
