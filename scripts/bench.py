"""imagelet benchmark, first form (issue: foundation).

Generates an OCI image layout with N small distinct images, starts the
compiled binary on it, and measures through the unix socket with Debian's
python3-grpcio (C-core):
  - cold start: process start → first answered ListImages;
  - ListImages p50/p99 (no filter) and its response size;
  - ImageStatus p50/p99 by tag, by short ID prefix and for a missing image;
  - the client's own floor: the same client calling a trivial gRPC server
    in this process (C-core, no Python handler work), so a reader can see
    how much of each figure is the client;
  - server RSS after the run.
All traffic is on a unix socket in a temp directory; every loop is bounded.

  scripts/bench [--images N] [--list-calls K] [--status-calls K]
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "integration"))
import cri_stubs  # noqa: E402
import grpc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import pct, rss_kib, timed, wait_for_list  # noqa: E402
from synthetic import write_layout  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))


def h2load(sock, method, request_bytes, n, work, concurrency=1):
    """Latencies (ms) of n sequential gRPC unary calls sent by h2load (nghttp2, C)
    over the unix socket: a POST of a length-prefixed message. Nothing is decoded
    client-side, so this is the server's time plus HTTP/2 transport."""
    body = os.path.join(work, f"{method}.body")
    with open(body, "wb") as f:
        f.write(b"\x00" + len(request_bytes).to_bytes(4, "big") + request_bytes)
    log = os.path.join(work, f"{method}.h2log")
    out = subprocess.run(
        ["h2load", "--base-uri", f"unix:{sock}", "-n", str(n), "-c", str(concurrency), "-m", "1", "-d", body,
         "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log,
         f"http://localhost/runtime.v1.ImageService/{method}"],
        capture_output=True, text=True, timeout=300,
    )
    if f"{n} succeeded" not in out.stdout:
        raise SystemExit(f"h2load failed: {out.stdout}{out.stderr}")
    with open(log) as f:
        return [int(line.split("\t")[2]) / 1000 for line in f if line.strip()]


def client_floor(pb, pbg, k, list_response, list_k):
    """The same client and channel type against an in-process C-core server
    whose handlers return prebuilt answers (the same ListImages response)."""
    from concurrent import futures

    class Empty(pbg.ImageServiceServicer):
        def ImageStatus(self, request, context):
            return pb.ImageStatusResponse()

        def ListImages(self, request, context):
            return list_response

    d = tempfile.mkdtemp(prefix="imagelet-floor-")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    pbg.add_ImageServiceServicer_to_server(Empty(), server)
    server.add_insecure_port(f"unix:{d}/floor.sock")
    server.start()
    try:
        stub = pbg.ImageServiceStub(grpc.insecure_channel(f"unix:{d}/floor.sock"))
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image="x"))
        for _ in range(200):
            stub.ImageStatus(req)
        status = timed(lambda: stub.ImageStatus(req), k)
        list_req = pb.ListImagesRequest()
        for _ in range(5):
            stub.ListImages(list_req)
        return status, timed(lambda: stub.ListImages(list_req), list_k)
    finally:
        server.stop(0)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--list-calls", type=int, default=200)
    ap.add_argument("--status-calls", type=int, default=5000)
    ap.add_argument("--no-scans", action="store_true", help="skip the store-scan benchmarks")
    args = ap.parse_args()
    pb, pbg = cri_stubs.load()

    work = tempfile.mkdtemp(prefix="imagelet-bench-")
    proc = None
    try:
        t = time.time()
        ids = write_layout(os.path.join(work, "layout"), args.images)
        print(f"generated OCI layout with {args.images} images in {time.time() - t:.1f} s")
        sock = os.path.join(work, "imagelet.sock")
        cfg = os.path.join(work, "imagelet.toml")
        with open(cfg, "w") as f:
            f.write(f'socket = "{sock}"\nlog_level = "warn"\n[[backend]]\ntype = "oci-layout"\npath = "{work}/layout"\n')

        start = time.perf_counter()
        proc = subprocess.Popen([BIN, "serve", "--config", cfg], stderr=open(os.path.join(work, "log"), "w"))
        channel, first_images, _ = wait_for_list(pb, pbg, sock, proc, os.path.join(work, "log"), start, limit_s=60)
        first = pb.ListImagesResponse(images=first_images)
        cold_ms = (time.perf_counter() - start) * 1000
        stub = pbg.ImageServiceStub(channel)
        assert len(first.images) == args.images, len(first.images)
        list_bytes = first.ByteSize()

        list_req = pb.ListImagesRequest()
        for _ in range(5):
            stub.ListImages(list_req)
        lst = timed(lambda: stub.ListImages(list_req), args.list_calls)

        rng = random.Random(1)
        tag_reqs = [pb.ImageStatusRequest(image=pb.ImageSpec(image=f"bench.local/edge/app{rng.randrange(args.images)}:1.0")) for _ in range(args.status_calls)]
        for r in tag_reqs[:200]:
            stub.ImageStatus(r)
        it = iter(tag_reqs)
        by_tag = timed(lambda: stub.ImageStatus(next(it)), args.status_calls)
        assert stub.ImageStatus(tag_reqs[0]).HasField("image")

        prefix_reqs = iter([pb.ImageStatusRequest(image=pb.ImageSpec(image=ids[rng.randrange(args.images)][:12])) for _ in range(args.status_calls)])
        by_prefix = timed(lambda: stub.ImageStatus(next(prefix_reqs)), args.status_calls)
        missing_req = pb.ImageStatusRequest(image=pb.ImageSpec(image="not.here/x:1"))
        missing = timed(lambda: stub.ImageStatus(missing_req), args.status_calls)
        h2 = []
        if shutil.which("h2load"):
            h2 = [
                ("ListImages (no filter)", h2load(sock, "ListImages", b"", args.list_calls, work)),
                ("ImageStatus by tag", h2load(sock, "ImageStatus", tag_reqs[0].SerializeToString(), args.status_calls, work)),
            ]
        rss = rss_kib(proc.pid)
        floor, list_floor = client_floor(pb, pbg, args.status_calls, first, args.list_calls)

        rows = [
            ("ListImages (no filter)", lst),
            ("ImageStatus by tag", by_tag),
            ("ImageStatus by ID prefix", by_prefix),
            ("ImageStatus, not found", missing),
            ("client floor: ImageStatus, trivial server", floor),
            ("client floor: ListImages, same response", list_floor),
        ]
        print(f"\nimagelet {subprocess.run([BIN, 'version'], capture_output=True, text=True).stdout.split()[1]}, "
              f"{args.images} images, nproc {os.cpu_count()}, {time.strftime('%Y-%m-%d')}")
        print(f"cold start to first ListImages: {cold_ms:.0f} ms; ListImages response {list_bytes / 1e6:.2f} MB; server RSS {rss / 1024:.0f} MiB")
        def table(title, rows):
            print(f"\n{title}")
            print(f"{'call':42} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
            for name, s in rows:
                print(f"{name:42} {len(s):6d} {pct(s, 50):9.3f} {pct(s, 99):9.3f} {statistics.fmean(s):9.3f}")

        if h2:
            table("h2load (nghttp2, C; responses not decoded), sequential:", h2)
        else:
            print("\n(h2load not found: apt-get install nghttp2-client for the server-side figures)")
        table("python3-grpcio (C-core; responses decoded into Python objects), sequential:", rows)
        print(f"\np50 above the client floor: ListImages {pct(lst, 50) - pct(list_floor, 50):.3f} ms, "
              f"ImageStatus by tag {pct(by_tag, 50) - pct(floor, 50):.3f} ms")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_scans:
        scan_benchmarks()


def scan_benchmarks():
    """Time to first answer for the store backends that scan many files (one module each)."""
    print("\nstore scans (process start → ListImages listing every image; a change → visible):")
    for module, fn, label in (
        ("bench_archives", "bench_archives", "archives: 1,000 tarballs"),
        ("bench_containers_storage", "bench_containers_storage", "containers-storage: 10,000 images"),
    ):
        try:
            bench = getattr(__import__(module), fn)
        except ImportError:
            continue
        work = tempfile.mkdtemp(prefix=f"imagelet-{module}-")
        try:
            r = bench(BIN, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        first = r.get("all_listed_ms", r.get("first_answer_ms"))
        change = r.get("added_visible_ms", r.get("change_visible_ms"))
        print(f"  {label:40} first full answer {first} ms; change visible in {change} ms")


if __name__ == "__main__":
    main()
