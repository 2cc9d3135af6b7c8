"""Reliability suite, hostile input (issue #8): generated references through
ImageStatus and the ListImages filter, random and truncated protobuf payloads,
broken HTTP/2 and gRPC on raw connections, requests over 4 MiB; a client
asking good questions is served throughout. scripts/soak runs the same
scenarios with 10,000 references."""
import os

import grpc

import soak_scenarios
from conftest import EXAMPLES, oci_backend


def test_hostile_references_get_ok_or_invalid_argument(workdir):
    report = soak_scenarios.scenario_hostile_references(workdir, count=1500, concurrency=4, oversize=3)
    assert report.problems == []
    f = report.figures
    assert f["calls"] == 2 * 1500 + 3 and f["other codes"] == 0 and f["good client failures"] == 0
    assert f["OK"] > 0 and f["INVALID_ARGUMENT"] > 0
    assert f["largest reference bytes"] > 3 << 20


def test_a_reference_of_megabytes_is_refused_without_reading_it_through(serve):
    # Regression: 3.6 MB of a/a/a… held the event loop ~6 s in the reference grammar.
    s = serve(oci_backend(os.path.join(EXAMPLES, "sample-oci")))
    big = soak_scenarios.channel(s.socket, **{"grpc.max_send_message_length": 8 << 20})
    status = big.unary_unary("/runtime.v1.ImageService/ImageStatus", request_serializer=bytes, response_deserializer=bytes)
    for shape in ("a/", "a.", "a_", "a-"):
        ref = (shape * 1_800_000).encode()
        try:
            status(soak_scenarios.image_status_request(ref), timeout=60)
            raise AssertionError("answered OK")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "longer than 1024 characters" in e.details()
            assert f"({len(ref)} chars)" in e.details() and len(e.details()) < 400
    big.close()
    assert s.image_status("edge-tools:2.0").HasField("image")


def test_random_and_truncated_payloads_get_ok_or_invalid_argument(workdir):
    report = soak_scenarios.scenario_hostile_payloads(workdir, count=600)
    assert report.problems == []
    assert report.figures["answered INVALID_ARGUMENT"] > 0


def test_broken_http2_and_grpc_close_one_connection_only(workdir):
    report = soak_scenarios.scenario_garbage_frames(workdir, wait=1.0)
    assert report.problems == []
    assert report.figures["good client failures"] == 0 and report.figures["good client calls"] > 0
    assert report.outcomes["random bytes instead of the preface"] == "closed"
    assert report.outcomes["compressed flag without grpc-encoding"] in ("answered", "stream reset")
