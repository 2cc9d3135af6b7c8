"""Pieces every imagelet benchmark script uses: timing, percentiles, RSS, and
waiting for the first ListImages answer of a freshly started server."""
import os
import time

import grpc


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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for_list(pb, pbg, sock, proc, log_path, start, want=None, limit_s=120):
    """Polls ListImages until it answers (with `want` images, if given); returns
    (channel, images, ms since `start` of the first answer of any size).

    A fresh channel per attempt: a C-core channel whose first connect failed
    waits out its reconnect backoff, which would be measured as start-up time."""
    first_ms = None
    while True:
        if time.perf_counter() - start > limit_s:
            raise SystemExit(f"imagelet did not answer with {want or 'any'} images within {limit_s} s")
        if proc.poll() is not None:
            raise SystemExit(f"imagelet exited: {open(log_path).read()}")
        if os.path.exists(sock):
            channel = grpc.insecure_channel(f"unix:{sock}")
            try:
                images = pbg.ImageServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=10).images
                if first_ms is None:
                    first_ms = (time.perf_counter() - start) * 1000
                if want is None or len(images) == want:
                    return channel, images, first_ms
            except grpc.RpcError:
                pass
            channel.close()
        time.sleep(0.002)
