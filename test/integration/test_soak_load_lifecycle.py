"""Reliability suite, load, store churn and lifecycle (issue #8), with seconds
and small counts; scripts/soak runs the same scenarios for a minute each on
10,000 images and writes their figures into docs/reliability.md."""
import soak_scenarios


def test_mixed_load_fails_no_call(workdir):
    report = soak_scenarios.scenario_load(workdir, images=2000, duration=4.0, concurrency=16, warmup=1.0)
    assert report.problems == []
    f = report.figures
    assert f["calls"] > 100 and f["failed calls"] == 0 and f["wrong answers"] == 0
    assert {"ListImages calls", "ImageStatus calls", "StreamImages calls"} <= set(f) and f["p99 ms"] is not None


def test_store_churn_under_load_answers_consistent_snapshots_and_shows_each_change(workdir):
    report = soak_scenarios.scenario_churn(workdir, duration=5.0, concurrency=8, base=30)
    assert report.problems == []
    f = report.figures
    assert f["failed calls"] == 0 and f["wrong answers"] == 0 and f["calls"] > 100
    assert f["changes seen"] == f["changes"] >= 40
    for kind in ("oci add", "oci add (in-place rewrite)", "oci remove", "oci retag", "archive add",
                 "archive add (copied in place)", "archive remove", "containers-storage replace"):
        assert f"{kind}: max ms" in f, kind


def test_sigterm_kill_and_a_second_instance(workdir):
    report = soak_scenarios.scenario_lifecycle(workdir, images=5001, load_seconds=2.0, concurrency=8, streams=2)
    assert report.problems == []
    f = report.figures
    assert f["SIGTERM: images each stream delivered"] == [5001]
    assert f["second instance: first's failed calls"] == 0 and f["kill -9: stale socket removed"]
