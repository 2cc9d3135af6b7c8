"""Reliability suite, the mirror port (issue 22): slow and never-reading
clients, clients that vanish mid-blob, 1,000 connections, oversized requests,
and the store changing under a download (an OCI layout's blob, a
containers-storage layer's file), while a CRI client asks ImageStatus
every 20 ms. Small sizes (seconds); scripts/soak --only mirror runs the same
scenario at full size (mirror_soak.FULL)."""
import time

import mirror_soak
from conftest import Server
from mirror_http import fetch, free_port, wait_for_v2

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


def test_a_recreated_layer_verified_before_is_sent_unhashed_and_checked_file_by_file(workdir):
    """Once a re-created layer's download verified (its files 2 s old), the mirror streams it without
    hashing and the layer checks each file against that download's identity: a file rewritten with the
    very same bytes (a new ctime) is found before any byte of the next download left, which is then made
    again, hashed, and arrives whole and right; other bytes in place never reach a client as a whole layer."""
    root, layer, size, data = mirror_soak.containers_storage_copy(workdir, 8)
    port = free_port()
    server = Server(workdir, f'[mirror]\nlisten = "127.0.0.1:{port}"\n'
                             f'[[backend]]\ntype = "containers-storage"\npath = "{root}"\ndriver = "vfs"\n')
    path = f"/v2/soak/rebuilt/blobs/{layer}"
    try:
        wait_for_v2(port, server.proc, server.log_path)
        time.sleep(2.1)  # only identities at least 2 s old are recorded
        for _ in range(2):  # hashed (and recorded), then trusted
            got = fetch(port, path)
            assert (got.status, got.digest, got.size) == (200, layer, size), got.error
        with open(data, "rb") as f:
            original = f.read()
        with open(data, "r+b") as f:
            f.write(original[:1])  # the same byte: only the file's identity changes
        again = fetch(port, path)
        assert (again.status, again.digest, again.size) == (200, layer, size), again.error
        assert "not the file the layer was verified with" in server.log()
        time.sleep(2.1)
        assert fetch(port, path).digest == layer  # recorded again, then trusted
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 1
        with open(data, "r+b") as f:
            f.write(changed)
        for _ in range(2):
            bad = fetch(port, path)
            assert bad.digest is None and bad.size < size, (bad.status, bad.size, bad.error)
    finally:
        server.stop()
