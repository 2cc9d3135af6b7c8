"""HTTP/2 abuse (issue #14), at small sizes: each attack on both connection
paths while a normal client calls ImageStatus and ListImages; scripts/soak
runs the same attacks at full size (h2_abuse.py)."""
import h2_abuse


def test_a_burst_of_calls_behind_a_full_socket_is_answered_or_refused_on_both_paths(workdir):
    # Regression: 5,000 calls in one write, answers queued behind a full socket:
    # RangeError (Maximum call stack size exceeded) through Bun's flush and
    # grpc-js's sendStatus; the connection dropped, or the process ended.
    # Now the calls beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused, and the
    # connection ends with GOAWAY ENHANCE_YOUR_CALM on both paths.
    report = h2_abuse.scenario_h2_abuse(workdir, {"burst": 5000}, attacks=["burst"])
    assert report.problems == []
    for row in report.rows:
        assert "reset REFUSED_STREAM" in row["server"] and "GOAWAY ENHANCE_YOUR_CALM" in row["server"], row
