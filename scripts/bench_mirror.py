"""imagelet's mirror beside Debian's docker-registry (distribution 2.8) serving
the same image (issue 22, docs/performance.md "The mirror").

One image, docker.io/bench/big:1.0, one layer: an uncompressed tar of one file
of random bytes (256 MiB; --quick: 32 MiB), so its digest is its diff_id and
names the same blob in every store. It is written as an OCI layout, pushed into
distribution by skopeo (--preserve-digests) and copied by skopeo into a
containers-storage root (vfs driver). Then, one run, rounds alternating
(imagelet then distribution, then distribution then imagelet, ...), medians
reported, each figure a ratio imagelet / distribution:
  - GET of the layer blob from the OCI layout (imagelet: a file region);
  - GET of the same layer re-created from containers/storage (its tar-split and file);
  - 8 concurrent GETs of the layer (wall time until the last ends);
  - containerd 1.6 pulling the image (`ctr images pull --hosts-dir`, the server as
    docker.io's host, a fresh containerd root per round);
  - imagelet's RSS growth while serving all of that (VmHWM, reset before the first blob);
  - ImageStatus p50 on imagelet's CRI socket while 8 downloads stream from its mirror, against
    idle, and against the same 8 downloads streaming from distribution (the machine's load alone).
The client is curl (its own process: the time is the server's and the transport's);
every server's bytes are checked once against the digest with Python's sha256.

  scripts/bench_mirror.py [--quick] [--rounds N] [--size-mib N] [--no-write]
  scripts/bench_mirror.py --stand-in   # imagelet's side played by a second distribution

--stand-in runs every step with a second docker-registry where imagelet's
mirror would be (imagelet still serves the CRI socket); it checks the script,
its figures mean nothing. The figures go between the mirror markers of
docs/performance.md (above the part scripts/bench.py regenerates).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.path.insert(0, HERE)
import cri_stubs  # noqa: E402
from bench_common import channel as grpc_channel, pct, proc_status_kib  # noqa: E402
from bench_containerd import Containerd, version as containerd_version  # noqa: E402
from mirror_http import fetch, free_port, wait_for_v2, write_big_layout  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN = "<!-- mirror figures: begin (written by scripts/bench_mirror.py) -->"
END = "<!-- mirror figures: end -->"
REF = "docker.io/bench/big:1.0"
REPO = "bench/big"  # the path Docker and containerd send for docker.io/bench/big
CONCURRENT = 8
STATUS_CALLS = 200

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


class HttpServer:
    """A registry on a loopback port (port None: a server without one): its process
    (in its own process group), port and log."""

    def __init__(self, name, argv, port, work):
        self.name, self.port = name, port
        self.log_path = os.path.join(work, f"{name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if port is not None:
            wait_for_v2(port, self.proc, self.log_path)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def distribution(name, work):
    root = os.path.join(work, name)
    os.makedirs(root)
    port = free_port()
    config = os.path.join(work, f"{name}.yml")
    with open(config, "w") as f:
        f.write(DISTRIBUTION_CONFIG.format(root=root, port=port))
    return HttpServer(name, ["docker-registry", "serve", config], port, work)


def skopeo(*args):
    r = subprocess.run(["skopeo", "copy", "-q", "--preserve-digests", *args], capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"skopeo copy {' '.join(args)}: {r.stderr.strip()}")


def push(layout, server):
    skopeo("--dest-tls-verify=false", f"oci:{layout}:{REF}", f"docker://127.0.0.1:{server.port}/{REPO}:1.0")


def imagelet(name, work, backend, mirror=True):
    """imagelet serving `backend` (a [[backend]] table) with its mirror on a loopback port;
    mirror=False: the CRI socket only (--stand-in)."""
    port = free_port()
    sock = os.path.join(work, f"{name}.sock")
    config = os.path.join(work, f"{name}.toml")
    with open(config, "w") as f:
        f.write(f'socket = "{sock}"\nlog_level = "warn"\n' + (f'[mirror]\nlisten = "127.0.0.1:{port}"\n' if mirror else "") + backend)
    server = HttpServer(name, [BIN, "serve", "--config", config], port if mirror else None, work)
    server.socket = sock
    t = time.monotonic()
    while not os.path.exists(sock):
        if server.proc.poll() is not None or time.monotonic() - t > 30:
            raise SystemExit(f"{name} did not start: {open(server.log_path).read()[-3000:]}")
        time.sleep(0.02)
    return server


def curl(port, path):
    """One GET by curl into /dev/null; returns seconds (curl's time_total)."""
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=600)
    code, size, seconds = r.stdout.split()
    if r.returncode or code != "200":
        raise SystemExit(f"curl {path} on {port}: {code} {r.stderr.strip()}")
    return int(size), float(seconds)


def concurrent(port, path, n=CONCURRENT):
    """n curl processes at once; wall seconds until the last has its whole body."""
    t = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", f"http://127.0.0.1:{port}{path}"]) for _ in range(n)]
    codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        raise SystemExit(f"concurrent GET {path} on {port}: curl exit codes {codes}")
    return time.perf_counter() - t


def check_blob(server, path, digest, size):
    """The whole blob, right; returns what the answer lacks (a header), for the report."""
    got = fetch(server.port, path, timeout=300)
    if (got.status, got.digest, got.size) != (200, digest, size):
        raise SystemExit(f"{server.name}: {path} answered {got.status}, {got.size} bytes, {got.digest} {got.error or ''}")
    return [f"{server.name}'s GET of the blob has no {header}" for header in ("Content-Length", "Docker-Content-Digest")
            if header.lower() not in got.headers]


HOSTS_TOML = """\
server = "http://127.0.0.1:{port}"
[host."http://127.0.0.1:{port}"]
  capabilities = ["pull", "resolve"]
"""


def containerd_pull(server, work, round_no):
    """A fresh containerd root; the pull's seconds (resolve, fetch, unpack into the native snapshotter)."""
    d = os.path.join(work, f"ctd-{server.name}-{round_no}")
    hosts = os.path.join(d, "certs.d", "docker.io")
    os.makedirs(hosts)
    with open(os.path.join(hosts, "hosts.toml"), "w") as f:
        f.write(HOSTS_TOML.format(port=server.port))
    ctd = Containerd(d)
    try:
        ctd.start()
        ctd.wait_socket()
        t = time.perf_counter()
        ctd.ctr("images", "pull", "--snapshotter", "native", "--hosts-dir", os.path.join(d, "certs.d"), REF)
        return time.perf_counter() - t
    finally:
        ctd.stop()
        shutil.rmtree(d, ignore_errors=True)


def reset_peak_rss(pid):
    """Sets VmHWM back to the current VmRSS (proc(5), clear_refs "5"), so that the peak read later is this window's."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return proc_status_kib(pid, "VmRSS") / 1024


def status_latency(sock, pb, pbg, download_port=None, path=None):
    """ImageStatus p50/p99 (ms) on imagelet's CRI socket; with `download_port`, while CONCURRENT
    downloads of `path` stream from that server, each started again as it ends."""
    ch = grpc_channel(sock)
    stub = pbg.ImageServiceStub(ch)
    req = pb.ImageStatusRequest(image=pb.ImageSpec(image=REF))
    assert stub.ImageStatus(req, timeout=10).HasField("image"), f"{REF} not found on {sock}"
    stop = threading.Event()

    def download():
        while not stop.is_set():
            subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{download_port}{path}"], timeout=600)

    threads = [threading.Thread(target=download, daemon=True) for _ in range(CONCURRENT if download_port else 0)]
    for t in threads:
        t.start()
    time.sleep(0.3 if threads else 0)  # the downloads under way
    samples = []
    try:
        for _ in range(STATUS_CALLS):
            t = time.perf_counter()
            stub.ImageStatus(req, timeout=30)
            samples.append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
        ch.close()
    return pct(samples, 50), pct(samples, 99)


def med(values):
    return statistics.median(values)


def run(args, work):
    pb, pbg = cri_stubs.load()
    size = (args.size_mib or (32 if args.quick else 256)) << 20
    layout = os.path.join(work, "layout")
    image = write_big_layout(layout, REF, size)
    layer, layer_size = image["layer"], image["layer_size"]
    blob = f"/v2/{REPO}/blobs/{layer}"
    cs_root, cs_run = os.path.join(work, "cs"), os.path.join(work, "cs-run")
    skopeo(f"oci:{layout}:{REF}", f"containers-storage:[vfs@{cs_root}+{cs_run}]{REF}")
    servers = []
    try:
        dist = distribution("distribution", work)
        servers.append(dist)
        push(layout, dist)
        oci_backend = f'[[backend]]\ntype = "oci-layout"\npath = "{layout}"\n'
        cs_backend = f'[[backend]]\ntype = "containers-storage"\npath = "{cs_root}"\ndriver = "vfs"\n'
        if args.stand_in:
            cri = imagelet("imagelet-cri", work, oci_backend, mirror=False)
            servers.append(cri)
            oci = distribution("stand-in", work)
            servers.append(oci)
            push(layout, oci)
            cs = oci
        else:
            oci = imagelet("imagelet-oci", work, oci_backend)
            servers.append(oci)
            cs = imagelet("imagelet-cs", work, cs_backend)
            servers.append(cs)
            cri = oci
        notes = [note for server in {id(s): s for s in (dist, oci, cs)}.values() for note in check_blob(server, blob, layer, layer_size)]
        imagelet_pids = [s.pid for s in {id(s): s for s in (oci, cs)}.values()]
        rss_before = {pid: reset_peak_rss(pid) for pid in imagelet_pids}
        pairs = {"oci": (oci, dist), "cs": (cs, dist)}
        times = {k: ([], []) for k in ("oci", "cs", "concurrent", "containerd")}
        status = {k: [] for k in ("idle", "mirror", "distribution")}
        for r in range(args.rounds):
            # A B, then B A: whoever goes first after the other's work (page cache, a containerd root
            # being deleted) goes first as often as second.
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for key in ("oci", "cs"):
                for side in order:
                    times[key][side].append(curl(pairs[key][side].port, blob)[1])
            for side in order:
                times["concurrent"][side].append(concurrent(pairs["oci"][side].port, blob))
            if not args.no_containerd:
                for side in order:
                    times["containerd"][side].append(containerd_pull(pairs["oci"][side], work, r))
            # The CRI socket idle, while imagelet's mirror streams, and while distribution streams the
            # same downloads (the control: what the machine's load alone does to imagelet's answers).
            status["idle"].append(status_latency(cri.socket, pb, pbg))
            for side in order:
                status[("mirror", "distribution")[side]].append(status_latency(cri.socket, pb, pbg, pairs["oci"][side].port, blob))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[0][-1]:.3f}/{v[1][-1]:.3f} s" for k, v in times.items() if v[0]), flush=True)
        rss_peak = {pid: proc_status_kib(pid, "VmHWM") / 1024 for pid in imagelet_pids}
        rss_names = {oci.pid: "OCI layout", cs.pid: "containers-storage"}
    finally:
        for s in reversed(servers):
            s.stop()
    figures = {
        "size_mib": size >> 20, "rounds": args.rounds, "stand_in": args.stand_in, "notes": notes,
        "times": {k: {"imagelet": med(v[0]), "distribution": med(v[1])} for k, v in times.items() if v[0]},
        "rss_mib": {rss_names[pid]: {"baseline": rss_before[pid], "peak": rss_peak[pid]} for pid in imagelet_pids},
        "status_ms": {k: {"p50": med([x[0] for x in v]), "p99": med([x[1] for x in v])} for k, v in status.items()},
    }
    return figures


TARGETS = {
    "oci": ("a layer blob from an OCI layout, GET", 1.0),
    "cs": ("the same layer re-created from containers/storage (vfs), GET", 2.0),
    "concurrent": (f"{CONCURRENT} concurrent GETs of the layer, wall time", 1.0),
    "containerd": ("containerd 1.6 pulling the image (`ctr images pull`, fresh root)", 1.0),
}
RSS_LIMIT_MIB = 32


def markdown(f, meta):
    lines = [BEGIN, "",
             f"One run of `scripts/bench_mirror.py{meta['flags']}` on {meta['date']}, commit `{meta['git']}`, {meta['machine']}; "
             f"distribution {meta['distribution']}, containerd {meta['containerd']}, curl as the client. "
             f"Layer {f['size_mib']} MiB; {f['rounds']} round(s), servers alternating; medians. Figures are ratios imagelet / distribution "
             "(below 1: imagelet faster).", ""]
    if f["stand_in"]:
        lines += ["**Stand-in run: a second distribution played imagelet's mirror; these figures check the script, not imagelet.**", ""]
    lines += ["| figure | imagelet s | distribution s | ratio | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    for key, (title, limit) in TARGETS.items():
        t = f["times"].get(key)
        if not t:
            lines.append(f"| {title} | not run | | | ≤ {limit:g}× | |")
            continue
        ratio = t["imagelet"] / t["distribution"]
        lines.append(f"| {title} | {t['imagelet']:.3f} | {t['distribution']:.3f} | {ratio:.2f} | ≤ {limit:g}× | {'yes' if ratio <= limit else '**no**'} |")
    for name, r in f["rss_mib"].items():
        growth = r["peak"] - r["baseline"]
        lines.append(f"| imagelet's RSS growth while serving all of the above, {name} server ({r['baseline']:.0f} → peak {r['peak']:.0f} MiB) | "
                     f"{growth:.1f} MiB | | | ≤ {RSS_LIMIT_MIB} MiB | {'yes' if growth <= RSS_LIMIT_MIB else '**no**'} |")
    s = f["status_ms"]
    busy, idle, control = s["mirror"], s["idle"], s["distribution"]
    ratio = busy["p50"] / idle["p50"]
    lines.append(f"| ImageStatus p50 on the CRI socket while {CONCURRENT} downloads stream from the mirror / idle "
                 f"(p99 {busy['p99']:.2f} / {idle['p99']:.2f} ms) | {busy['p50']:.2f} / {idle['p50']:.2f} ms | | {ratio:.2f} | ≤ 2× | "
                 f"{'yes' if ratio <= 2 else '**no**'} |")
    lines.append(f"| the same, downloads from the mirror / the same downloads from distribution (control: the machine's load alone; "
                 f"p99 {busy['p99']:.2f} / {control['p99']:.2f} ms) | {busy['p50']:.2f} / {control['p50']:.2f} ms | | "
                 f"{busy['p50'] / control['p50']:.2f} | | |")
    if f["notes"]:
        lines += ["", "Noticed while checking the bytes (each body was whole and hashed to its digest):", ""]
        lines += [f"- {note}" for note in f["notes"]]
    lines += ["", END]
    return "\n".join(lines)


def write_section(text, doc=DOC):
    """Replaces the text between the mirror markers, or puts it before scripts/bench.py's generated part."""
    with open(doc) as f:
        current = f.read()
    if BEGIN in current and END in current:
        new = current[: current.index(BEGIN)] + text + current[current.index(END) + len(END):]
    else:
        from bench_report import MARKER

        heading = "## The mirror beside distribution (issue 22)\n\nWritten by `scripts/bench_mirror.py` (also run by `scripts/bench`).\n\n"
        at = current.index(MARKER) if MARKER in current else len(current)
        new = current[:at] + heading + text + "\n\n" + current[at:]
    with open(doc, "w") as f:
        f.write(new)


def meta(args):
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    dist = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.split()[-1]
    flags = "".join(f" {a}" for a in sys.argv[1:])
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": git or "?", "flags": flags,
            "machine": f"{os.cpu_count()} CPUs ({cpu})", "distribution": dist,
            "containerd": "not run" if args.no_containerd else containerd_version()}


def main(argv=None, doc=None):
    """`doc`: the report to write the section into (scripts/bench.py's, even with --quick)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 32 MiB layer, 1 round, no write to docs/")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per server, alternating (default 3; --quick: 1)")
    ap.add_argument("--size-mib", type=int, default=None, help="the layer's file size (default 256)")
    ap.add_argument("--no-containerd", action="store_true", help="skip the containerd pulls")
    ap.add_argument("--stand-in", action="store_true", help="a second distribution where imagelet's mirror would be")
    ap.add_argument("--no-write", action="store_true", help="print the figures only")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if os.geteuid() != 0 and not args.no_containerd:
        raise SystemExit("containerd needs root: run as root, or pass --no-containerd")
    # On disk, not tmpfs: several copies of the layer (layout, distribution, containers-storage, containerd).
    work = tempfile.mkdtemp(prefix="imagelet-bench-mirror-", dir="/var/tmp")
    try:
        figures = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(figures, meta(args))
    print(json.dumps(figures, indent=1))
    print(text)
    if doc is None and not (args.no_write or args.quick):
        doc = DOC
    if doc is not None and not args.stand_in:
        write_section(text, doc)
        print(f"wrote the mirror's figures into {os.path.relpath(doc, ROOT)}")
    return figures


if __name__ == "__main__":
    main()
