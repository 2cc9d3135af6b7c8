"""imagelet beside containerd (issue #7).

For each N (default 1,000, 10,000 and 50,000 small distinct images) it writes
one OCI layout, serves it with imagelet and imports the same images into
containerd (Debian's, its own root, state and socket, CRI plugin, native
snapshotter; `ctr images import --no-unpack`), then drives both with the same
h2load requests over their unix sockets and measures, per server:
  - start → first ListImages that lists every image (cold scan);
  - ListImages p50/p99, ImageStatus p50/p99 at concurrency 1, ImageStatus
    throughput at concurrency 32 (32 connections, and 1 connection × 32
    streams), StreamImages time to the last batch;
  - a store change → visible to ImageStatus (imagelet: index.json replaced;
    containerd: `ctr images tag`);
  - CPU used during an idle window, RSS peak (VmHWM) and steady (VmRSS after it);
  - memory as an edge user sees it (issue 17): RSS, peak, anonymous and
    file-backed pages 10 s after the same short call sequence (crictl images,
    imagefsinfo, 800 ImageStatus, 20 ListImages; scripts/bench_memory.py),
    given to both servers right after their cold start.
imagelet's RSS per backend kind (oci-layout, archives, containers-storage,
docker, isulad) on the same N images is measured at 1,000 and 10,000.
imagelet's other scanning backends (containers/storage, archive directory,
and the containerd backend on the root containerd imported into, read while
containerd runs) get their own cold-scan and change figures. Every answer is checked once with
python3-grpcio before it is timed with h2load, and h2load's received bytes
are checked against the answer's size.

The run's figures go below the marker in docs/performance.md, with the plot
docs/performance.svg. `--quick` is a smoke run with small N into run/bench/.
Then scripts/bench_mirror.py measures the mirror beside distribution (its own
section of the same report; `--no-mirror` skips it).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.path.insert(0, HERE)
import cri_stubs  # noqa: E402
import grpc  # noqa: E402
from bench_common import channel as grpc_channel, cpu_seconds, grpc_body, h2load, pct, proc_status_kib, wait_for_list  # noqa: E402
from bench_containerd import Containerd, version as containerd_version  # noqa: E402
from bench_containerd_backend import bench_containerd_root  # noqa: E402
from bench_memory import SETTLE_S as SEQUENCE_SETTLE_S, backend_memory, call_sequence, memory, mib  # noqa: E402
from bench_report import MARKER, markdown, svg_plot, svg_rss_plot  # noqa: E402
from synthetic import write_layout  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
CHANGED_TAG = "bench.local/edge/changed:1.0"


class Calls:
    """How many calls each measurement makes; fewer for big answers so a size takes seconds, not minutes."""

    def __init__(self, n, quick):
        self.list = max(20, min(200, 2_000_000 // n)) if not quick else 20
        self.status = 5000 if not quick else 1000
        self.throughput = 40_000 if not quick else 5000


class Served:
    """One server under test: its name, socket, process and how to change its store."""

    def __init__(self, name, socket, proc, change):
        self.name, self.socket, self.proc, self.change = name, socket, proc, change


def start_imagelet(work, layout, n, pb, pbg, name="imagelet", binary=BIN):
    sock = os.path.join(work, f"{name}.sock")
    cfg = os.path.join(work, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(f'socket = "{sock}"\nlog_level = "warn"\n[[backend]]\ntype = "oci-layout"\npath = "{layout}"\n')
    log_path = os.path.join(work, f"{name}.log")
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    channel, _, _ = wait_for_list(pb, pbg, sock, proc, log_path, start, want=n, limit_s=300)
    cold_ms = (time.perf_counter() - start) * 1000
    channel.close()

    def change():
        """One more index.json entry (a new tag for an existing manifest), replaced atomically."""
        index_path = os.path.join(layout, "index.json")
        with open(index_path) as f:
            index = json.load(f)
        entry = dict(index["manifests"][0], annotations={"org.opencontainers.image.ref.name": CHANGED_TAG})
        index["manifests"].append(entry)
        with open(index_path + ".tmp", "w") as f:
            json.dump(index, f)
        os.rename(index_path + ".tmp", index_path)

    return Served(name, sock, proc, change), cold_ms


def start_containerd(work, layout, n, pb, pbg):
    """Imports the layout into a fresh containerd, restarts it, and times the restart's cold scan."""
    ctd = Containerd(work)
    tarball = os.path.join(work, "images.tar")
    subprocess.run(["tar", "-C", layout, "-cf", tarball, "."], check=True)
    try:
        ctd.start()
        ctd.wait_socket()
        import_s = ctd.import_archive(tarball)
        os.unlink(tarball)
        # The CRI plugin learns of imported images from events; wait until it has them all
        # (every half second: a ListImages of every image is no small call for containerd).
        channel, _, _ = wait_for_list(pb, pbg, ctd.socket, ctd.proc, ctd.log_path, time.perf_counter(), want=n,
                                      limit_s=1800, every_s=0.5)
        channel.close()
        ctd.stop()
        start = ctd.start()
        channel, _, _ = wait_for_list(pb, pbg, ctd.socket, ctd.proc, ctd.log_path, start, want=n, limit_s=600)
        cold_ms = (time.perf_counter() - start) * 1000
        channel.close()
    except BaseException:
        ctd.stop()
        raise

    def change():
        ctd.ctr("images", "tag", "bench.local/edge/app0:1.0", CHANGED_TAG)

    return Served("containerd", ctd.socket, ctd.proc, change), ctd, cold_ms, import_s


class Driven:
    """A server with its answers checked once by python3-grpcio, and the h2load request bodies."""

    def __init__(self, server, n, work, pb, pbg):
        self.server, self.pb = server, pb
        self.pb_stub = pbg.ImageServiceStub
        self.channel = grpc_channel(server.socket)
        self.stub = stub = pbg.ImageServiceStub(self.channel)
        listed = stub.ListImages(pb.ListImagesRequest(), timeout=60)
        assert len(listed.images) == n, f"{server.name} lists {len(listed.images)} images, not {n}"
        status_req = pb.ImageStatusRequest(image=pb.ImageSpec(image=f"bench.local/edge/app{n // 2}:1.0"))
        status = stub.ImageStatus(status_req, timeout=10)
        assert status.HasField("image"), f"{server.name} does not find {status_req.image.image}"
        try:
            streamed = sum(len(batch.images) for batch in stub.StreamImages(pb.StreamImagesRequest(), timeout=60))
            assert streamed == n, f"{server.name} streams {streamed} images, not {n}"
            self.streams = True
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self.streams = False  # containerd 1.6 predates StreamImages
        self.list_bytes, self.status_bytes = listed.ByteSize(), status.ByteSize()
        self.dir = os.path.join(work, f"h2-{server.name}")
        os.makedirs(self.dir, exist_ok=True)
        self.list_body = grpc_body(os.path.join(self.dir, "list.body"), pb.ListImagesRequest().SerializeToString())
        self.status_body = grpc_body(os.path.join(self.dir, "status.body"), status_req.SerializeToString())
        self.stream_body = grpc_body(os.path.join(self.dir, "stream.body"), pb.StreamImagesRequest().SerializeToString())

    def h2load(self, method, body, k, want_bytes, **kw):
        r = h2load(self.server.socket, method, body, k, self.dir, **kw)
        # Every call must have received a whole answer (h2load checks only the HTTP status).
        if r.data_bytes < k * want_bytes:
            raise SystemExit(f"{self.server.name} {method}: {r.data_bytes} bytes for {k} calls, expected {want_bytes} each")
        return r

    def warm_up(self):
        self.h2load("ImageStatus", self.status_body, 2000, self.status_bytes)
        self.h2load("ListImages", self.list_body, 5, self.list_bytes)

    def round(self, calls):
        """One round of the timed calls."""
        lr = self.h2load("ListImages", self.list_body, calls.list, self.list_bytes)
        sr = self.h2load("ImageStatus", self.status_body, calls.status, self.status_bytes)
        c32 = self.h2load("ImageStatus", self.status_body, calls.throughput, self.status_bytes, connections=32)
        s32 = self.h2load("ImageStatus", self.status_body, calls.throughput, self.status_bytes, connections=1, streams=32)
        out = {
            "list_p50": pct(lr.latencies, 50), "list_p99": pct(lr.latencies, 99), "list_mb": self.list_bytes / 1e6,
            "status_p50": pct(sr.latencies, 50), "status_p99": pct(sr.latencies, 99),
            "status_rps_c32": c32.req_per_s, "status_rps_s32": s32.req_per_s,
            "client_cpu_c32": c32.client_cpu_s / c32.wall_s, "client_cpu_s32": s32.client_cpu_s / s32.wall_s,
        }
        if self.streams:
            out["stream_p50"] = pct(self.h2load("StreamImages", self.stream_body, calls.list, 0).latencies, 50)
        return out

    def change_visible_ms(self):
        """The store change → the first ImageStatus that finds the new tag (on a new channel)."""
        self.channel = grpc_channel(self.server.socket)
        self.stub = self.pb_stub(self.channel)
        req = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=CHANGED_TAG))
        assert not self.stub.ImageStatus(req, timeout=10).HasField("image")
        self.server.change()
        t = time.perf_counter()
        while not self.stub.ImageStatus(req, timeout=10).HasField("image"):
            if time.perf_counter() - t > 120:
                raise SystemExit(f"{self.server.name}: the store change was not visible within 120 s")
            time.sleep(0.002)
        return (time.perf_counter() - t) * 1000

    def close(self):
        self.channel.close()


def median_of_rounds(rounds):
    """Each figure's median over the rounds: the machine is shared, and one disturbed round should not decide."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


SETTLE_S = 15
SETTLE_QUICK_S = 2


def idle_window(servers, seconds, settle_s):
    """CPU ms each server uses while nobody calls it, then its RSS (steady) and VmHWM (peak).

    The first `settle_s` after the last call are measured on their own ("settle"): there
    each server collects the load's garbage and returns memory, work the load caused.
    The idle window starts after them and is what a server does by itself with no calls:
    its polling, timers and watches."""
    start = {s.name: cpu_seconds(s.proc.pid) for s in servers}
    time.sleep(settle_s)
    before = {s.name: cpu_seconds(s.proc.pid) for s in servers}
    time.sleep(seconds)
    out = {}
    for s in servers:
        out[s.name] = {
            "settle_cpu_ms": (before[s.name] - start[s.name]) * 1000,
            "idle_cpu_ms": (cpu_seconds(s.proc.pid) - before[s.name]) * 1000,
            "rss_steady_mib": proc_status_kib(s.proc.pid, "VmRSS") / 1024,
            "rss_peak_mib": proc_status_kib(s.proc.pid, "VmHWM") / 1024,
        }
    return out


BACKEND_KINDS = ("oci-layout", "archives", "containers-storage", "docker", "isulad")
BACKEND_SIZES = (1000, 10_000)


def per_backend(n, work, quick, pb, pbg):
    """imagelet's memory with each built-in backend kind serving the same N images, after the same calls."""
    out = {}
    for kind in BACKEND_KINDS:
        out[kind] = backend_memory(BIN, work, kind, n, pb, pbg, settle_s=2 if quick else SEQUENCE_SETTLE_S)
        r = out[kind]
        print(f"[{n:,}] backend {kind}: RSS {r['rss_mib']:.0f} MiB, peak {r['peak_mib']:.0f}, anonymous {r['anon_mib']:.0f}", flush=True)
    return out


def after_sequence(servers, n, pb, pbg, settle_s):
    """Both servers given the same short call sequence, then read `settle_s` later: RSS, peak, anonymous, file-backed (MiB)."""
    for s in servers:
        call_sequence(pb, pbg, s.socket, n)
    time.sleep(settle_s)
    out = {}
    for s in servers:
        m = mib(memory(s.proc.pid))
        out[s.name] = {"seq_rss_mib": m["rss_mib"], "seq_peak_mib": m["peak_mib"], "seq_anon_mib": m["anon_mib"], "seq_file_mib": m["file_mib"]}
    return out


def scans(n, work, quick):
    """imagelet's cold scan and change figures for the containers/storage and archives backends."""
    from bench_archives import bench_archives
    from bench_containers_storage import bench_containers_storage

    out = {}
    d = os.path.join(work, "cstorage")
    r = bench_containers_storage(BIN, d, n)
    out["containers-storage"] = {"images": n, "all_ms": r["first_answer_ms"], "change_ms": r["change_visible_ms"], "rss_mib": r["rss_mib"]}
    shutil.rmtree(d, ignore_errors=True)
    tarballs = min(n, 1000 if quick else 10_000)
    d = os.path.join(work, "archives")
    r = bench_archives(BIN, d, tarballs)
    out["archives (one tarball per image)"] = {"images": tarballs, "all_ms": r["all_listed_ms"], "change_ms": r["added_visible_ms"]}
    shutil.rmtree(d, ignore_errors=True)
    return out


def bench_size(n, args, root_work, pb, pbg):
    work = os.path.join(root_work, f"n{n}")
    os.makedirs(work)
    calls = Calls(n, args.quick)
    t = time.perf_counter()
    layout = os.path.join(work, "layout")
    write_layout(layout, n)
    print(f"[{n:,}] generated the OCI layout in {time.perf_counter() - t:.1f} s", flush=True)
    servers, run, ctd, import_s = [], {}, None, None
    try:
        with_containerd = not args.no_containerd and (args.containerd_max is None or n <= args.containerd_max)
        if with_containerd:
            # A copy: imagelet's change rewrites index.json, and containerd imports its own archive.
            ctd_layout = os.path.join(work, "layout-containerd")
            shutil.copytree(layout, ctd_layout)
            served, ctd, cold_ms, import_s = start_containerd(os.path.join(work, "containerd"), ctd_layout, n, pb, pbg)
            shutil.rmtree(ctd_layout)
            servers.append(served)
            run["containerd"] = {"cold_ms": cold_ms}
            print(f"[{n:,}] containerd: imported in {import_s:.1f} s, cold start {cold_ms:,.0f} ms", flush=True)
            # imagelet's containerd backend on that same root, while containerd runs on it.
            r = bench_containerd_root(BIN, os.path.join(work, "containerd-scan"), os.path.join(ctd.work, "root"), n, ctd)
            run["containerd_scan"] = {"images": n, "all_ms": r["first_answer_ms"], "change_ms": r["change_visible_ms"], "rss_mib": r["rss_mib"]}
            print(f"[{n:,}] scan containerd root: {n:,} listed {r['first_answer_ms']:,} ms after start, "
                  f"change visible in {r['change_visible_ms']:,} ms, RSS {r['rss_mib']} MiB", flush=True)
        if args.compare:
            # An earlier build, on its own copy of the layout: before/after figures from one run.
            before_layout = os.path.join(work, "layout-before")
            shutil.copytree(layout, before_layout)
            served, cold_ms = start_imagelet(work, before_layout, n, pb, pbg, "before", args.compare)
            servers.insert(0, served)
            run["before"] = {"cold_ms": cold_ms}
            print(f"[{n:,}] before ({args.compare}): cold start {cold_ms:,.0f} ms", flush=True)
        served, cold_ms = start_imagelet(work, layout, n, pb, pbg)
        servers.insert(0, served)
        run["imagelet"] = {"cold_ms": cold_ms}
        print(f"[{n:,}] imagelet: cold start {cold_ms:,.0f} ms", flush=True)
        # Memory as a device with N images sees it, before any load: the same short sequence for both.
        for name, figures in after_sequence(servers, n, pb, pbg, 2 if args.quick else SEQUENCE_SETTLE_S).items():
            run[name].update(figures)
            print(f"[{n:,}] {name}: after the call sequence RSS {figures['seq_rss_mib']:.1f} MiB, peak {figures['seq_peak_mib']:.1f}, "
                  f"anonymous {figures['seq_anon_mib']:.1f}, file-backed {figures['seq_file_mib']:.1f}", flush=True)
        driven = [Driven(s, n, work, pb, pbg) for s in servers]
        for d in driven:
            d.warm_up()
        # Rounds alternate between the servers, so a busy moment on the shared machine hits both.
        rounds = {d.server.name: [] for d in driven}
        for _ in range(args.rounds):
            for d in driven:
                rounds[d.server.name].append(d.round(calls))
        for d in driven:
            run[d.server.name].update(median_of_rounds(rounds[d.server.name]))
            d.close()
        # Idle means no calls and no store changes: the window comes before the change is made.
        for name, figures in idle_window(servers, args.idle, args.settle).items():
            run[name].update(figures)
        for d in driven:
            r = run[d.server.name]
            r["change_ms"] = d.change_visible_ms()
            d.close()
            print(f"[{n:,}] {d.server.name}: ListImages p50 {r['list_p50']:.2f} ms, ImageStatus p50 {r['status_p50']:.3f} ms, "
                  f"{r['status_rps_c32']:,.0f}/s (32 conns), {r['status_rps_s32']:,.0f}/s (32 streams), "
                  f"change {r['change_ms']:.0f} ms", flush=True)
        for s in servers:
            r = run[s.name]
            print(f"[{n:,}] {s.name}: RSS peak {r['rss_peak_mib']:.0f} MiB, steady {r['rss_steady_mib']:.0f} MiB, "
                  f"idle CPU {r['idle_cpu_ms']:.0f} ms in {args.idle} s", flush=True)
    finally:
        for s in servers:
            if s.name != "containerd" and s.proc.poll() is None:
                s.proc.terminate()
                s.proc.wait(timeout=30)
        if ctd is not None:
            ctd.stop()
    shutil.rmtree(work, ignore_errors=True)
    containerd_scan = run.pop("containerd_scan", None)
    if not args.no_scans and n in BACKEND_SIZES:
        run["backends"] = per_backend(n, root_work, args.quick, pb, pbg)
    if not args.no_scans:
        run["scans"] = scans(n, root_work, args.quick)
    if containerd_scan:
        run.setdefault("scans", {})["containerd root (containerd backend)"] = containerd_scan
    if run.get("scans"):
        for name, r in run["scans"].items():
            print(f"[{n:,}] scan {name}: {r['images']:,} listed {r['all_ms']:,.0f} ms after start, change visible in {r['change_ms']:,.0f} ms", flush=True)
    return run, import_s


def machine(args, fs):
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "mem_gib": mem_kib / 1024 / 1024,
        "cpu": cpu,
        "kernel": platform.release(),
        "command": "scripts/bench" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:])),
        "imagelet": subprocess.run([BIN, "version"], capture_output=True, text=True).stdout.split()[1],
        "git": git or "?",
        "containerd": containerd_version() if not args.no_containerd else "not run",
        "h2load": subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip(),
        "fs": fs,
        "import_s": {},
    }


def write_report(results, out_dir, doc_name):
    os.makedirs(out_dir, exist_ok=True)
    doc = os.path.join(out_dir, doc_name)
    plot = os.path.splitext(doc_name)[0] + ".svg"
    above = "# Performance\n\n"
    if os.path.exists(doc):
        with open(doc) as f:
            text = f.read()
        if MARKER in text:
            above = text[: text.index(MARKER)]
    with open(doc, "w") as f:
        f.write(above + markdown(results, plot))
    with open(os.path.join(out_dir, plot), "w") as f:
        f.write(svg_plot(results))
    with open(os.path.join(out_dir, os.path.splitext(doc_name)[0] + "-rss.svg"), "w") as f:
        f.write(svg_rss_plot(results))
    with open(os.path.join(out_dir, os.path.splitext(doc_name)[0] + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated N (default 10,100,1000,10000,50000; --quick: 100,1000)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, fewer calls, 5 s idle window, report into run/bench/")
    ap.add_argument("--idle", type=int, default=None, help="idle window in seconds (default 60)")
    ap.add_argument("--no-containerd", action="store_true", help="imagelet only")
    ap.add_argument("--containerd-max", type=int, default=None, help="skip containerd for N above this (its import is the slow part)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per server, alternating; medians are reported (default 3, --quick: 1)")
    ap.add_argument("--compare", metavar="BIN", help="also measure this (earlier) imagelet binary, as the server \"before\"")
    ap.add_argument("--no-scans", action="store_true", help="skip the containers-storage and archives scans")
    ap.add_argument("--no-mirror", action="store_true", help="skip the mirror beside distribution (scripts/bench_mirror.py)")
    ap.add_argument("--out", default=None, help="report directory (default docs/, or run/bench/ with --quick)")
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("100,1000" if args.quick else "10,100,1000,10000,50000")).split(",")]
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.idle = args.idle if args.idle is not None else (5 if args.quick else 60)
    args.settle = SETTLE_QUICK_S if args.quick else SETTLE_S
    out_dir = args.out or (os.path.join(ROOT, "run", "bench") if args.quick else os.path.join(ROOT, "docs"))
    if not args.no_containerd and os.geteuid() != 0:
        raise SystemExit("containerd needs root: run scripts/bench as root, or pass --no-containerd")
    pb, pbg = cri_stubs.load()

    # Both servers' stores on the same filesystem; tmpfs when there is one, so containerd's
    # import (bbolt syncs every transaction) takes minutes rather than tens of minutes.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="imagelet-bench-", dir=base)
    fs = "tmpfs (/dev/shm)" if base else f"the temp directory's filesystem ({tempfile.gettempdir()})"
    results = {"meta": machine(args, fs), "idle_s": args.idle, "settle_s": args.settle,
               "rounds": args.rounds, "runs": {}}
    try:
        for n in sizes:
            run, import_s = bench_size(n, args, work, pb, pbg)
            results["runs"][n] = run
            if import_s is not None:
                results["meta"]["import_s"][n] = import_s
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = write_report(results, out_dir, "performance.md")
    print(f"\nwrote {doc} and its plot")
    if not args.no_mirror:
        import bench_mirror

        print("\n== the mirror beside distribution (scripts/bench_mirror.py)", flush=True)
        bench_mirror.main((["--quick"] if args.quick else []) + (["--no-containerd"] if args.no_containerd else []), doc=doc)


if __name__ == "__main__":
    main()
