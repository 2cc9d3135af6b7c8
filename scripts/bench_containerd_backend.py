"""Benchmark of the containerd backend (acceptance: time to first answer with a
containerd root holding 10,000 images, and the backend's RSS).

A containerd root is made by Debian's containerd itself: N small distinct
images (test/integration/synthetic.py) in one OCI archive, `ctr images import
--no-unpack` into a containerd of its own root, state and socket (CRI plugin
on, as bench_containerd.py runs it), left until its CRI plugin lists them all
and restarted, as scripts/bench does. With that containerd running (it
holds meta.db's lock and may write), the compiled imagelet is started with one
`containerd` backend on the root, and measured through its unix socket with
python3-grpcio:
  - process start → first ListImages that lists every image;
  - `ctr images tag` → the new name resolves in ImageStatus;
  - ListImages p50 afterwards, and the server's RSS.
scripts/bench runs the same measurement on the containerd it imports into.
Needs root.

  scripts/bench_containerd_backend.py [--images N]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.path.insert(0, HERE)
import cri_stubs  # noqa: E402
from bench_common import backend_scan, wait_for_list  # noqa: E402
from bench_containerd import Containerd  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
CHANGED_TAG = "bench.local/edge/containerd-changed:1.0"


def bench_containerd_root(bin_path, work_dir, root, n, ctd, source_tag="bench.local/edge/app0:1.0"):
    """Figures (ms unless named otherwise) for imagelet reading containerd root `root` of n images,
    while `ctd` (a running bench_containerd.Containerd on that root) can make the change."""
    os.makedirs(work_dir, exist_ok=True)
    pb, pbg = cri_stubs.load()
    r = backend_scan(pb, pbg, bin_path, work_dir, "containerd", root, n,
                     lambda: ctd.ctr("images", "tag", source_tag, CHANGED_TAG), CHANGED_TAG)
    ctd.ctr("images", "rm", CHANGED_TAG)
    r["meta_db_mib"] = round(os.path.getsize(os.path.join(root, "io.containerd.metadata.v1.bolt", "meta.db")) / 2**20, 1)
    return r


def main():
    from synthetic import write_layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("containerd needs root")
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="imagelet-bench-ctd-", dir=base)
    ctd = Containerd(os.path.join(work, "containerd"))
    try:
        layout = os.path.join(work, "layout")
        write_layout(layout, args.images)
        tarball = os.path.join(work, "images.tar")
        subprocess.run(["tar", "-C", layout, "-cf", tarball, "."], check=True)
        shutil.rmtree(layout)
        ctd.start()
        ctd.wait_socket()
        import_s = ctd.import_archive(tarball)
        os.unlink(tarball)
        # As scripts/bench does: until containerd's CRI plugin has every image (it writes an ID
        # name per image as it learns of them), then restarted, so the root is settled.
        pb, pbg = cri_stubs.load()
        for restart in (True, False):
            channel, _, _ = wait_for_list(pb, pbg, ctd.socket, ctd.proc, ctd.log_path, time.perf_counter(), want=args.images,
                                          limit_s=1800, every_s=0.5)
            channel.close()
            if restart:
                ctd.stop()
                ctd.start()
                ctd.wait_socket()
        r = bench_containerd_root(BIN, os.path.join(work, "imagelet"), os.path.join(ctd.work, "root"), args.images, ctd)
    finally:
        ctd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"containerd root, {r['images']} images (imported by containerd in {import_s:.1f} s; meta.db {r['meta_db_mib']} MiB):")
    print(f"  process start to first ListImages listing all: {r['first_answer_ms']} ms")
    print(f"  ctr images tag to visible:                     {r['change_visible_ms']} ms")
    print(f"  ListImages p50 afterwards:                     {r['list_p50_ms']} ms")
    print(f"  server RSS:                                    {r['rss_mib']} MiB")


if __name__ == "__main__":
    main()
