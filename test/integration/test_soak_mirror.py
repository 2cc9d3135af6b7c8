"""Reliability suite, the mirror port (issue 22): slow and never-reading
clients, clients that vanish mid-blob, 1,000 connections, oversized requests,
and the store changing under a download (an OCI layout's blob, a
containers-storage layer's file), while a CRI client asks ImageStatus
every 20 ms. Small sizes (seconds); scripts/soak --only mirror runs the same
scenario at full size (mirror_soak.FULL)."""
import mirror_soak

def test_no_mirror_client_crashes_imagelet_or_starves_the_cri_socket(workdir):
    report = mirror_soak.scenario_mirror(workdir, mirror_soak.SHORT)
    assert report.problems == []
    f = report.figures
    # The CRI client was really asking throughout, and every part really ran.
    assert f["CRI ImageStatus calls"] > 50 and f["CRI failures"] == 0
    assert f["connections opened"] == 1000 and f["clients that vanished mid-blob"] == 40
    assert f["slow readers: MiB read"] > 0
    for store, mode in [(s, m) for s in ("OCI layout", "containers-storage") for m in mirror_soak.CHANGE_MODES]:
        assert "MIXED" not in f[f"{store}, {mode}: outcomes"]


def test_a_blob_rewritten_in_place_under_a_download_is_never_sent_mixed(workdir):
    report = mirror_soak.scenario_store_change(workdir, "rewritten in place")
    assert report.problems == []
    assert report.figures["OCI layout, rewritten in place: outcomes"] in ("old bytes 1, cut short 0", "old bytes 0, cut short 1")
