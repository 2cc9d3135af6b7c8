"""Pieces every imagelet benchmark script uses: timing, percentiles, RSS and
CPU of a process, h2load runs, and waiting for the first ListImages answer of
a freshly started server."""
import os
import resource
import re
import statistics
import subprocess
import time

import grpc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# ListImages answers pass C-core's default 4 MiB receive limit at tens of thousands of images.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


def channel(sock):
    return grpc.insecure_channel(f"unix:{sock}", options=CHANNEL_OPTIONS)


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(fn, k):
    """Runs fn k times; returns each call's latency in ms."""
    out = []
    for _ in range(k):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1e6)
    return out


def proc_status_kib(pid, field):
    """A /proc/PID/status memory field (VmRSS, VmHWM, ...) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def cpu_seconds(pid):
    """User + system CPU time the process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def grpc_body(path, request_bytes):
    """A gRPC request body: an uncompressed, length-prefixed message."""
    with open(path, "wb") as f:
        f.write(b"\x00" + len(request_bytes).to_bytes(4, "big") + request_bytes)
    return path


class H2Run:
    """One h2load run: per-request latencies (ms), throughput, DATA bytes received, client CPU."""

    def __init__(self, latencies, req_per_s, data_bytes, client_cpu_s, wall_s):
        self.latencies = latencies
        self.req_per_s = req_per_s
        self.data_bytes = data_bytes
        self.client_cpu_s = client_cpu_s
        self.wall_s = wall_s


def h2load(sock, method, body, n, work, connections=1, streams=1, service="runtime.v1.ImageService", timeout=600):
    """n gRPC unary (or server-streaming) calls sent by h2load (nghttp2, C) over the unix
    socket as POSTs of a length-prefixed message. Nothing is decoded client-side, so the
    figures are the server's time plus HTTP/2 transport. A call's latency is until the
    end of its response (trailers), so for StreamImages it is the time to the last batch."""
    log = os.path.join(work, f"{method}.h2log")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(
        ["h2load", "--base-uri", f"unix:{sock}", "-n", str(n), "-c", str(connections), "-m", str(streams),
         "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log,
         f"http://localhost/{service}/{method}"],
        capture_output=True, text=True, timeout=timeout,
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if f"{n} succeeded" not in out.stdout:
        raise SystemExit(f"h2load {method} failed on {sock}: {out.stdout}{out.stderr}")
    with open(log) as f:
        latencies = [int(line.split("\t")[2]) / 1000 for line in f if line.strip()]
    os.unlink(log)
    rate = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", out.stdout).group(1))
    data = int(re.search(r"traffic: .*?, .*?, \S+ \((\d+)\) data", out.stdout).group(1))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return H2Run(latencies, rate, data, cpu, wall)


def wait_for_list(pb, pbg, sock, proc, log_path, start, want=None, limit_s=120, every_s=0.002):
    """Polls ListImages until it answers (with `want` images, if given); returns
    (channel, images, ms since `start` of the first answer of any size).

    A fresh channel per attempt: a C-core channel whose first connect failed
    waits out its reconnect backoff, which would be measured as start-up time.
    `every_s` spaces the attempts where they would compete with what they wait for."""
    first_ms = None
    while True:
        if time.perf_counter() - start > limit_s:
            raise SystemExit(f"{sock}: no ListImages answer with {want or 'any'} images within {limit_s} s")
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {open(log_path).read()[-4000:]}")
        if os.path.exists(sock):
            ch = channel(sock)
            try:
                images = pbg.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=30).images
                if first_ms is None:
                    first_ms = (time.perf_counter() - start) * 1000
                if want is None or len(images) == want:
                    return ch, images, first_ms
            except grpc.RpcError:
                pass
            ch.close()
        time.sleep(every_s)


def backend_scan(pb, pbg, bin_path, work_dir, backend_type, path, n, make_change, changed_tag):
    """Starts the compiled imagelet serving one backend (`backend_type` on `path`,
    holding n images) and measures, in ms unless named otherwise:
      - process start → the first ListImages that lists all n;
      - ListImages p50 over 20 calls, after 3 warm-ups;
      - `make_change()` → `changed_tag` resolves in ImageStatus;
      - the server's RSS.
    The server is stopped before it returns."""
    sock = os.path.join(work_dir, "imagelet.sock")
    cfg = os.path.join(work_dir, "imagelet.toml")
    with open(cfg, "w") as f:
        f.write(f'socket = "{sock}"\nlog_level = "warn"\n[[backend]]\ntype = "{backend_type}"\npath = "{path}"\n')
    log_path = os.path.join(work_dir, "log")
    start = time.perf_counter()
    proc = subprocess.Popen([bin_path, "serve", "--config", cfg], stderr=open(log_path, "w"), stdout=subprocess.DEVNULL)
    try:
        ch, _, _ = wait_for_list(pb, pbg, sock, proc, log_path, start, want=n)
        first_answer_ms = (time.perf_counter() - start) * 1000
        stub = pbg.ImageServiceStub(ch)
        req = pb.ListImagesRequest()
        for _ in range(3):
            stub.ListImages(req)
        samples = []
        for _ in range(20):
            t = time.perf_counter()
            stub.ListImages(req)
            samples.append((time.perf_counter() - t) * 1000)
        status_req = pb.ImageStatusRequest(image=pb.ImageSpec(image=changed_tag))
        t = time.perf_counter()
        make_change()
        while not stub.ImageStatus(status_req, timeout=10).HasField("image"):
            if time.perf_counter() - t > 60:
                raise SystemExit(f"{backend_type}: {changed_tag} did not resolve within 60 s of the change")
            time.sleep(0.002)
        change_ms = (time.perf_counter() - t) * 1000
        ch.close()
        return {
            "images": n,
            "first_answer_ms": round(first_answer_ms),
            "change_visible_ms": round(change_ms),
            "list_p50_ms": round(statistics.median(samples), 1),
            "rss_mib": round(rss_kib(proc.pid) / 1024),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=15)
