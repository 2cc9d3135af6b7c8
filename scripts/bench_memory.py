"""Memory of a server, the way an edge user sees it: RSS, peak, anonymous and
file-backed pages from /proc/PID/status and smaps_rollup, and which mappings
of /proc/PID/smaps hold them, at each stage of start-up and after the same
call sequence for every server (issue 17):

  crictl `images` and `imagefsinfo` (ListImages, ImageFsInfo), 800 ImageStatus
  by tag (over the images in turn), 20 ListImages, then 10 s of nothing.

Used by scripts/bench.py for both servers, and on its own:

  python3 scripts/bench_memory.py [--sizes 10,100] [--binary dist/imagelet] [--no-containerd] [--smaps]
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

SETTLE_S = 10
STATUS_CALLS = 800
LIST_CALLS = 20


def memory(pid):
    """KiB figures of one process: VmRSS, VmHWM, RssAnon, RssFile (status) and Anonymous (smaps_rollup)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean"):
                    out["rollup_" + key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def mib(figures):
    """The figures the report uses, in MiB: rss, peak, anon, file."""
    return {
        "rss_mib": figures.get("VmRSS", 0) / 1024,
        "peak_mib": figures.get("VmHWM", 0) / 1024,
        "anon_mib": figures.get("RssAnon", 0) / 1024,
        "file_mib": (figures.get("RssFile", 0) + figures.get("RssShmem", 0)) / 1024,
    }


def mappings(pid, top=12):
    """Rss and Anonymous KiB per mapping name of /proc/PID/smaps (anonymous mappings as "[anon]"), biggest first."""
    by = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else "[anon]"
                # Bun's executable is mapped in several pieces; so are its heaps.
                by.setdefault(name, {"rss": 0, "anon": 0, "size": 0, "maps": 0})
                by[name]["maps"] += 1
            elif parts[0] == "Rss:":
                by[name]["rss"] += int(parts[1])
            elif parts[0] == "Anonymous:":
                by[name]["anon"] += int(parts[1])
            elif parts[0] == "Size:":
                by[name]["size"] += int(parts[1])
    rows = sorted(by.items(), key=lambda kv: -kv[1]["rss"])
    return rows[:top]


def call_sequence(pb, pbg, sock, n):
    """The issue's sequence: crictl images, crictl imagefsinfo, 800 ImageStatus, 20 ListImages (one channel each, as the tools do)."""
    from bench_common import channel

    with channel(sock) as ch:
        stub = pbg.ImageServiceStub(ch)
        assert len(stub.ListImages(pb.ListImagesRequest(), timeout=60).images) == n
    with channel(sock) as ch:
        pbg.ImageServiceStub(ch).ImageFsInfo(pb.ImageFsInfoRequest(), timeout=60)
    with channel(sock) as ch:
        stub = pbg.ImageServiceStub(ch)
        for i in range(STATUS_CALLS):
            ref = f"bench.local/edge/app{i % n}:1.0"
            assert stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=10).HasField("image")
        for _ in range(LIST_CALLS):
            assert len(stub.ListImages(pb.ListImagesRequest(), timeout=60).images) == n


def staged(pid, pb, pbg, sock, n, settle_s=SETTLE_S, with_maps=False):
    """Memory after the first answer (given), after the call sequence, and `settle_s` later."""
    stages = {}
    call_sequence(pb, pbg, sock, n)
    stages["after calls"] = memory(pid)
    time.sleep(settle_s)
    stages["steady"] = memory(pid)
    out = {"stages": stages}
    if with_maps:
        out["maps"] = mappings(pid)
    return out


def imagelet_memory(binary, work, layout, n, pb, pbg, settle_s=SETTLE_S, with_maps=False, env=None, name="imagelet", backend=None):
    """Starts imagelet on `layout` (or the [[backend]] table `backend`); returns (stages, start → first full ListImages ms)."""
    from bench_common import wait_for_list

    sock = os.path.join(work, f"{name}-mem.sock")
    cfg = os.path.join(work, f"{name}-mem.toml")
    backend = backend or f'type = "oci-layout"\npath = "{layout}"\n'
    with open(cfg, "w") as f:
        f.write(f'socket = "{sock}"\nlog_level = "warn"\n[[backend]]\n{backend}')
    log_path = os.path.join(work, f"{name}-mem.log")
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT,
                                env=None if env is None else {**os.environ, **env})
    try:
        # The socket appears once the first scan is done (serve.ts builds the registry, then listens).
        while not os.path.exists(sock):
            if proc.poll() is not None:
                raise SystemExit(open(log_path).read()[-4000:])
            time.sleep(0.001)
        first_scan = memory(proc.pid)
        ch, _, _ = wait_for_list(pb, pbg, sock, proc, log_path, start, want=n, limit_s=300)
        first_ms = (time.perf_counter() - start) * 1000
        ch.close()
        first = memory(proc.pid)
        out = staged(proc.pid, pb, pbg, sock, n, settle_s, with_maps)
        out["stages"] = {"first scan (socket up)": first_scan, "first answer": first, **out["stages"]}
        return out, first_ms
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def containerd_memory(work, layout, n, pb, pbg, settle_s=SETTLE_S, with_maps=False):
    """containerd given the same images (imported, then restarted as scripts/bench does)."""
    from bench_common import wait_for_list
    from bench_containerd import Containerd

    ctd = Containerd(os.path.join(work, "containerd-mem"))
    tarball = os.path.join(work, "images-mem.tar")
    subprocess.run(["tar", "-C", layout, "-cf", tarball, "."], check=True)
    try:
        ctd.start()
        ctd.wait_socket()
        ctd.import_archive(tarball)
        os.unlink(tarball)
        ch, _, _ = wait_for_list(pb, pbg, ctd.socket, ctd.proc, ctd.log_path, time.perf_counter(), want=n, limit_s=1800, every_s=0.5)
        ch.close()
        ctd.stop()
        start = ctd.start()
        ctd.wait_socket()
        first_scan = memory(ctd.proc.pid)
        ch, _, _ = wait_for_list(pb, pbg, ctd.socket, ctd.proc, ctd.log_path, start, want=n, limit_s=600)
        first_ms = (time.perf_counter() - start) * 1000
        ch.close()
        first = memory(ctd.proc.pid)
        out = staged(ctd.proc.pid, pb, pbg, ctd.socket, n, settle_s, with_maps)
        out["stages"] = {"socket up": first_scan, "first answer": first, **out["stages"]}
        return out, first_ms
    finally:
        ctd.stop()


def backend_memory(binary, work, kind, n, pb, pbg, settle_s=SETTLE_S, env=None):
    """imagelet serving N images from one backend of `kind` (scripts/bench_stores.py): figures in MiB after the call sequence."""
    from bench_stores import WRITERS

    store = os.path.join(work, f"store-{kind}-{n}")
    backend = WRITERS[kind](store, n)
    try:
        out, first_ms = imagelet_memory(binary, work, None, n, pb, pbg, settle_s, env=env, name=f"be-{kind}", backend=backend)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    steady, after = mib(out["stages"]["steady"]), mib(out["stages"]["after calls"])
    return {"rss_mib": steady["rss_mib"], "peak_mib": steady["peak_mib"], "anon_mib": steady["anon_mib"],
            "file_mib": steady["file_mib"], "after_calls_mib": after["rss_mib"], "first_ms": first_ms}


def print_report(label, out, first_ms):
    print(f"== {label}: start → first full ListImages {first_ms:.0f} ms")
    print(f"   {'stage':24} {'RSS':>7} {'peak':>7} {'anon':>7} {'file':>7}  (MiB)")
    for stage, fig in out["stages"].items():
        m = mib(fig)
        print(f"   {stage:24} {m['rss_mib']:7.1f} {m['peak_mib']:7.1f} {m['anon_mib']:7.1f} {m['file_mib']:7.1f}")
    for name, r in out.get("maps", []):
        print(f"   map {name[-60:]:60} rss {r['rss'] / 1024:6.1f} anon {r['anon'] / 1024:6.1f} size {r['size'] / 1024:8.1f} ({r['maps']} maps)")


def main():
    import cri_stubs
    from synthetic import write_layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100")
    ap.add_argument("--binary", action="append", help="imagelet binaries to measure (default dist/imagelet); repeatable")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for imagelet's environment; repeatable")
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--smaps", action="store_true", help="also list the mappings that hold the steady pages")
    ap.add_argument("--settle", type=float, default=SETTLE_S)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--backends", help="comma-separated backend kinds (oci-layout, archives, containers-storage, docker, isulad): one line each per N, imagelet only")
    args = ap.parse_args()
    binaries = args.binary or [os.path.join(cri_stubs.ROOT, "dist", "imagelet")]
    env = dict(kv.split("=", 1) for kv in args.env) or None
    pb, pbg = cri_stubs.load()
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="imagelet-mem-", dir=base)
    try:
        if args.backends:
            for n in [int(s) for s in args.sizes.split(",")]:
                for kind in args.backends.split(","):
                    for b in binaries:
                        r = backend_memory(b, work, kind, n, pb, pbg, args.settle, env)
                        print(f"{kind:20} {n:>7,} {os.path.basename(b):12} steady {r['rss_mib']:6.1f}  peak {r['peak_mib']:6.1f}  "
                              f"anon {r['anon_mib']:6.1f}  file {r['file_mib']:6.1f}  first {r['first_ms']:6.0f} ms", flush=True)
            return
        for n in [int(s) for s in args.sizes.split(",")]:
            layout = os.path.join(work, f"layout-{n}")
            write_layout(layout, n)
            for _ in range(args.repeat):
                for b in binaries:
                    out, ms = imagelet_memory(b, work, layout, n, pb, pbg, args.settle, args.smaps, env)
                    print_report(f"{n} images, {b}", out, ms)
            if not args.no_containerd:
                if os.geteuid() != 0:
                    raise SystemExit("containerd needs root")
                copy = os.path.join(work, f"layout-{n}-ctd")
                shutil.copytree(layout, copy)
                out, ms = containerd_memory(work, copy, n, pb, pbg, args.settle, args.smaps)
                print_report(f"{n} images, containerd", out, ms)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
