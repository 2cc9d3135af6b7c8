"""HTTP/2 abuse (issue #14), at small sizes: each attack of h2_abuse.py on both
connection paths (`:authority` localhost, and the socket path through the
header rewriter) while a normal client calls ImageStatus and ListImages.
scripts/soak runs the same attacks at full size (--only h2)."""
import h2_abuse

# Short connection timeouts, so that the connections that must be closed are within seconds.
TIMEOUTS = {"keepalive_time": "2s", "keepalive_timeout": "1s"}


def test_every_attack_on_both_paths_leaves_the_service_up_and_the_normal_client_served(workdir):
    report = h2_abuse.scenario_h2_abuse(workdir, h2_abuse.SMALL_SIZES, timeouts=TIMEOUTS, close_within=10, rss_return_within=15)
    # The process lives, the normal client has no failed call and no gap over
    # 1 s, a fresh client is answered at once, stream exhaustion grows RSS by
    # at most 64 MiB and gives it back, the log has no RangeError.
    assert report.problems == []
    rows = {(r["attack"], r["path"]): r for r in report.rows}
    print("\n".join(f"{r['attack']} ({r['path']}): {r['server']} [{r['seconds']} s]" for r in report.rows))
    assert len(rows) == 2 * len(h2_abuse.ATTACKS)
    for path in h2_abuse.PATHS:
        # Regression: 5,000 calls in one write, their answers queued behind a
        # full socket, overflowed the stack (RangeError through Bun's flush and
        # grpc-js's sendStatus): the connection dropped, or the process ended.
        # Now the calls over SETTINGS_MAX_CONCURRENT_STREAMS are refused.
        burst = rows[("burst", path)]["server"]
        assert "reset REFUSED_STREAM" in burst and "GOAWAY ENHANCE_YOUR_CALM" in burst
        # Streams held without progress close their connection (keepalive_timeout).
        for stalled in ("streams held at the limit", "partial requests", "zero window"):
            assert "GOAWAY ENHANCE_YOUR_CALM" in rows[(stalled, path)]["server"], rows[(stalled, path)]
        # The rewriter used to re-encode 60 MB from one small block (RSS +240 MiB).
        assert "GOAWAY ENHANCE_YOUR_CALM" in rows[("HPACK bomb", "socket path")]["server"]
        assert rows[("HPACK bomb", path)]["RSS peak MiB"] - rows[("HPACK bomb", path)]["RSS before MiB"] < 16
    # GOAWAYs reach clients on the rewriting path too (it used to just end).
    for attack in ("rapid reset", "CONTINUATION flood", "empty header names", "1 MiB header value"):
        assert "GOAWAY" in rows[(attack, "socket path")]["server"], rows[(attack, "socket path")]
