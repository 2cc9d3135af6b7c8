"""imagelet's own HTTP/2 abuse suite (issue #14), shared by scripts/soak (full
sizes; figures into docs/reliability.md) and test_h2_abuse.py (small sizes).

Each attack is one hostile connection (raw frames, h2_raw.py) made on each of
the two connection paths: `:authority` localhost (the socket itself goes to the
HTTP/2 server) and the socket path as `:authority` (kubelet and crictl before
v1.30: the connection goes through the header rewriter). Meanwhile a normal
client (python3-grpcio) calls ImageStatus and ListImages. Per attack and path:
the server's reaction, the normal client's calls ok/failed and its longest
gap, RSS before/peak/after and the server's CPU. A broken promise (the process
ends, a normal call fails or waits over 1 s, a fresh client is not answered at
once, stream exhaustion grows RSS over 64 MiB) is a problem in the report."""
import os
import struct
import threading
import time

import grpc

import cri_stubs
from conftest import EXAMPLES, Server, oci_backend
from h2_raw import RawH2, call_frames
from soak_scenarios import Report, channel, image_status_request, ms, rss_kib

PATHS = ("localhost", "socket path")
MAX_GAP_S = 1.0
MAX_EXHAUSTION_GROWTH_MIB = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_idle(pid, quiet=0.25, busy=0.5, timeout=60):
    """Waits until the server used under `busy` of a CPU for `quiet` seconds: it has
    done all it can with what it read (the normal client's calls alone stay below)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < busy * quiet:
            return True
        last = now
    return False


class NormalClient:
    """A well-behaved client on its own connection: ImageStatus and ListImages in turn, one at a time.
    `gap` is the longest time without a successful answer (from one answer to the next)."""

    def __init__(self, sock):
        self.pb, pbg = cri_stubs.load()
        self.channel = channel(sock)
        self.stub = pbg.ImageServiceStub(self.channel)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reset(self):
        with getattr(self, "_lock", threading.Lock()):
            self.ok, self.failed, self.failures = 0, 0, []
            self.last = time.monotonic()
            self.gap = 0.0

    def _run(self):
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                if i % 2:
                    r = self.stub.ImageStatus(self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image="edge-tools:2.0")), timeout=5)
                    assert r.HasField("image"), "edge-tools:2.0 not found"
                else:
                    assert len(self.stub.ListImages(self.pb.ListImagesRequest(), timeout=5).images) == 2, "not 2 images"
                with self._lock:
                    now = time.monotonic()
                    self.gap = max(self.gap, now - self.last)
                    self.last = now
                    self.ok += 1
            except (grpc.RpcError, AssertionError) as e:
                with self._lock:
                    self.failed += 1
                    if len(self.failures) < 5:
                        self.failures.append(str(e)[:300])
            time.sleep(0.005)

    def figures(self):
        with self._lock:
            gap = max(self.gap, time.monotonic() - self.last)
            return self.ok, self.failed, gap, list(self.failures)

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=10)
        self.channel.close()


class Sampler:
    """RSS of the server every 50 ms while an attack runs."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = self.before = rss_kib(pid)
        self.cpu_before = cpu_seconds(pid)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return

    def stop(self):
        self._stop.set()
        self.thread.join()
        self.cpu = cpu_seconds(self.pid) - self.cpu_before


def authority_for(server, path):
    return server.socket if path == "socket path" else "localhost"


def fresh_client_answers(server, timeout=1.0):
    """A new connection's first call, answered within `timeout`."""
    pb, pbg = cri_stubs.load()
    ch = channel(server.socket)
    try:
        t = time.monotonic()
        pbg.ImageServiceStub(ch).ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="edge-tools:2.0")), timeout=timeout + 4)
        return time.monotonic() - t
    except grpc.RpcError:
        return None
    finally:
        ch.close()


# --- the attacks: each (server, authority, size) -> (outcome text, problems) --------------------


def attack_burst(server, authority, calls):
    """One call, then `calls` ListImages calls in one write, the connection window
    open to 16 MiB; the client reads only once the server has done all it can, so
    the answers pile up behind a full socket (what overflowed the stack)."""
    c = RawH2(server.socket, read="later")
    problems = []
    try:
        c.send(call_frames("ListImages", b"", 1, authority))
        c.send_frames(call_frames("ListImages", b"", 2 * i + 3, authority) for i in range(calls))
        c.flushed(timeout=120)
        wait_idle(server.proc.pid)
        c.start_reading()
        streams = range(1, 2 * calls + 2, 2)
        c.wait(lambda c: c.finished() >= calls + 1 or c.goaway, timeout=120)
        c.wait(lambda c: not c.unsettled(streams), timeout=10)
        lost = c.unsettled(streams)
        # Clean: each call answered or reset, or the connection ended with a
        # GOAWAY (a client over the advertised stream limit is told to calm down).
        if lost and not c.goaway:
            problems.append(f"burst of {calls}: {len(lost)} calls neither answered nor refused, and no GOAWAY ({c.outcome()})")
        other = {code: n for code, n in c.resets.items() if code != "REFUSED_STREAM"}
        if other:
            problems.append(f"burst of {calls}: resets other than REFUSED_STREAM: {other}")
        return c.outcome(), problems
    finally:
        c.close()


ATTACKS = {
    "burst": ("one call, then N ListImages calls in one write", attack_burst),
}


def scenario_h2_abuse(workdir, sizes, attacks=None, paths=PATHS):
    """Runs each attack of `sizes` (name -> size) on each path, with a normal client throughout."""
    report = Report("HTTP/2 abuse")
    server = Server(workdir, oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    normal = NormalClient(server.socket)
    report.rows = []
    try:
        time.sleep(0.5)
        for name in attacks or list(ATTACKS):
            _, attack = ATTACKS[name]
            for path in paths:
                if server.proc.poll() is not None:
                    break
                wait_idle(server.proc.pid, quiet=0.2, timeout=10)
                normal.reset()
                sampler = Sampler(server.proc.pid)
                t0 = time.monotonic()
                try:
                    outcome, problems = attack(server, authority_for(server, path), sizes[name])
                finally:
                    sampler.stop()
                took = time.monotonic() - t0
                ok, failed, gap, failures = normal.figures()
                alive = server.proc.poll() is None
                fresh = fresh_client_answers(server) if alive else None
                label = f"{name} ({path})"
                row = {"attack": name, "path": path, "size": sizes[name], "server": outcome, "normal ok": ok,
                       "normal failed": failed, "longest gap ms": ms(gap), "fresh client ms": ms(fresh),
                       "RSS before MiB": round(sampler.before / 1024, 1), "RSS peak MiB": round(sampler.peak / 1024, 1),
                       "RSS after MiB": round(rss_kib(server.proc.pid) / 1024, 1) if alive else None,
                       "server CPU s": round(sampler.cpu, 2), "seconds": round(took, 1)}
                report.rows.append(row)
                for p in problems:
                    report.problem(f"{label}: {p}")
                if not alive:
                    report.problem(f"{label}: imagelet exited: {server.log()[-1500:]}")
                    break
                if failed:
                    report.problem(f"{label}: the normal client had {failed} failed calls: {failures}")
                if gap > MAX_GAP_S:
                    report.problem(f"{label}: the normal client waited {gap:.2f} s for an answer")
                if fresh is None or fresh > MAX_GAP_S:
                    report.problem(f"{label}: a fresh client was not answered within {MAX_GAP_S:g} s ({fresh})")
        for row in report.rows:
            key = f"{row['attack']} ({row['path']})"
            report.figures[key] = (f"{row['server']}; normal {row['normal ok']} ok / {row['normal failed']} failed, "
                                   f"gap {row['longest gap ms']} ms; RSS {row['RSS before MiB']}/{row['RSS peak MiB']}/"
                                   f"{row['RSS after MiB']} MiB; CPU {row['server CPU s']} s")
        if "RangeError" in server.log() or "internal error" in server.log():
            report.problem("the log has a RangeError or an internal error")
    finally:
        normal.stop()
        server.stop()
    return report
