"""A raw HTTP/2 client for the abuse suite (h2_abuse.py): frames written as
bytes, read back by a thread that keeps reading whatever the writer does (so
the server is never held by a client that stopped reading unless a scenario
wants that), answers SETTINGS and PING, gives back flow-control credit, and
counts what came back: answers (trailers), RST_STREAM codes, GOAWAYs, the close.

All writes go through one writer thread, whole frames at a time, so the
reader's control frames never cut into a large write (a burst of thousands of
calls) and the reader never blocks on a write."""
import collections
import socket
import struct
import threading
import time

from soak_scenarios import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE,
                            RST_STREAM, SETTINGS, WINDOW_UPDATE, frame, grpc_headers, grpc_message)

# RFC 9113 §7 error codes, by number, for reports.
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
               5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
               10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def header_block(stream, block, end_stream=False, piece=16384):
    """HEADERS (+ CONTINUATIONs) carrying an HPACK block of any size."""
    first, rest = block[:piece], block[piece:]
    out = [frame(HEADERS, (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS), stream, first)]
    while rest:
        part, rest = rest[:piece], rest[piece:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream, part))
    return b"".join(out)


def call_frames(method, payload, stream, authority, end_stream=True):
    """HEADERS + DATA of one gRPC call; without `end_stream` the request never ends."""
    return (frame(HEADERS, END_HEADERS, stream, grpc_headers(method, authority))
            + frame(DATA, END_STREAM if end_stream else 0, stream, grpc_message(payload)))


class RawH2:
    """One client connection. `window` is the connection window opened at
    once (WINDOW_UPDATE on stream 0, as gRPC clients do); `read` False makes
    a client that never reads (the socket fills)."""

    def __init__(self, sock_path, window=16 << 20, settings=b"", read=True, ack=True, credit=True, rcvbuf=None):
        """`read` False: never read; "later": only once start_reading() is called (the socket fills meanwhile)."""
        self.s = socket.socket(socket.AF_UNIX)
        if read is False or rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf or 4096)
        self.s.connect(sock_path)
        self.ack, self.credit = ack, credit
        self.answered = 0  # trailers (HEADERS with END_STREAM) received
        self.ping_acks = 0
        self.settings_acks = 0
        self.answered_streams = set()
        self.resets = collections.Counter()  # RST_STREAM error code name -> count
        self.reset_streams = set()
        self.goaway = None  # the first GOAWAY: (error code name, last stream id)
        self.goaways = []
        self.settings = {}  # the server's SETTINGS
        # Flow-control credit the server gave this client to send DATA (RFC 9113 §6.9).
        self.send_window = {0: 65535}
        self.closed_at = None
        self.write_failed = False
        self._reader = None
        self.bytes_in = 0
        self.opened_at = time.monotonic()
        self._lock = threading.Condition()
        self._urgent = collections.deque()
        self._queue = collections.deque()
        self._stop = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True)
        self._writer.start()
        first = PREFACE + frame(SETTINGS, 0, 0, settings)
        if window:
            first += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window))
        self.send(first)
        if read is True:
            self.start_reading()

    def start_reading(self):
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # --- writing ---

    def send(self, data, urgent=False):
        with self._lock:
            (self._urgent if urgent else self._queue).append(data)
            self._lock.notify()

    def send_frames(self, frames, piece=64 << 10):
        """Queues many whole frames (an iterable of bytes), in writes of about `piece` bytes."""
        buf, n = [], 0
        for f in frames:
            buf.append(f)
            n += len(f)
            if n >= piece:
                self.send(b"".join(buf))
                buf, n = [], 0
        if buf:
            self.send(b"".join(buf))

    def flushed(self, timeout=60):
        """Waits until everything queued has been written (or the connection is gone)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._queue or self._urgent or self._writing) and not self.write_failed and time.monotonic() < deadline:
                self._lock.wait(0.05)
        return not (self._queue or self._urgent)

    _writing = False

    def _write_loop(self):
        while True:
            with self._lock:
                while not (self._urgent or self._queue or self._stop):
                    self._lock.wait()
                if self._stop:
                    return
                data = (self._urgent or self._queue).popleft()
                self._writing = True
            try:
                self.s.sendall(data)
            except OSError:
                # The server closed; what it sent before is still to be read, so
                # the close counts when the reader reaches it.
                self.write_failed = True
                with self._lock:
                    self._queue.clear()
                    self._urgent.clear()
                    self._writing = False
                    self._lock.notify_all()
                return
            with self._lock:
                self._writing = False
                self._lock.notify_all()

    # --- reading ---

    def _mark_closed(self):
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    def _read_loop(self):
        buf = b""
        while not self._stop:
            try:
                chunk = self.s.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self._mark_closed()
                return
            self.bytes_in += len(chunk)
            buf = buf + chunk if buf else chunk
            pos, credit, streams_credit = 0, 0, collections.Counter()
            while len(buf) - pos >= 9:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if len(buf) - pos < 9 + length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                self._on_frame(kind, flags, stream, payload)
                if kind == DATA and length:
                    credit += length
                    streams_credit[stream] += length
            buf = buf[pos:]
            if credit and self.credit:
                out = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", credit))
                out += b"".join(frame(WINDOW_UPDATE, 0, st, struct.pack(">I", n)) for st, n in streams_credit.items()
                                if st not in self.answered_streams)
                self.send(out, urgent=True)

    def _on_frame(self, kind, flags, stream, payload):
        if kind == HEADERS and flags & END_STREAM:
            with self._lock:
                self.answered += 1
                self.answered_streams.add(stream)
                self._lock.notify_all()
        elif kind == RST_STREAM and len(payload) >= 4:
            with self._lock:
                self.resets[ERROR_NAMES.get(struct.unpack(">I", payload[:4])[0], "?")] += 1
                self.reset_streams.add(stream)
                self._lock.notify_all()
        elif kind == GOAWAY and len(payload) >= 8:
            last, code = struct.unpack(">II", payload[:8])
            self.goaways.append((ERROR_NAMES.get(code, str(code)), last & 0x7FFFFFFF))
            self.goaway = self.goaways[0]
        elif kind == WINDOW_UPDATE and len(payload) >= 4:
            with self._lock:
                self.send_window[stream] = self.window(stream) + (struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF)
                self._lock.notify_all()
        elif kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                self.settings[key] = value
            if self.ack:
                self.send(frame(SETTINGS, ACK, 0), urgent=True)
        elif kind == PING and not flags & ACK and self.ack:
            self.send(frame(PING, ACK, 0, payload), urgent=True)
        elif kind == PING:
            self.ping_acks += 1
        elif kind == SETTINGS:
            self.settings_acks += 1

    def wait(self, predicate, timeout):
        """Waits until predicate(self) or the connection closed; returns whether predicate held."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self) and not self.gone() and time.monotonic() < deadline:
                self._lock.wait(0.05)
        return predicate(self)

    def window(self, stream):
        """What this client may send on `stream` now (the server's initial window until it says more)."""
        return self.send_window.get(stream, self.settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535))

    def take_window(self, stream, n):
        with self._lock:
            n = min(n, self.window(stream), self.window(0))
            if n > 0:
                self.send_window[stream] = self.window(stream) - n
                self.send_window[0] -= n
            return max(n, 0)

    def gone(self):
        """The server closed the connection (as the reader saw it, or as writes found it with no reader)."""
        return self.closed_at is not None or (self.write_failed and self._reader is None)

    def finished(self):
        """Answers plus resets: every stream the server has dealt with."""
        return self.answered + sum(self.resets.values())

    def unsettled(self, streams):
        """Of `streams`, those the server neither answered, nor reset, nor declared
        unprocessed (above a GOAWAY's last stream): lost without a word."""
        last = min((l for _, l in self.goaways), default=None)
        return [st for st in streams if st not in self.answered_streams and st not in self.reset_streams
                and (last is None or st <= last)]

    def outcome(self):
        """One line for a report: what the server did with this connection."""
        parts = [f"{self.answered} answered"]
        parts += [f"{n} reset {code}" for code, n in sorted(self.resets.items())]
        if self.goaways:
            parts.append("GOAWAY " + " then ".join(dict.fromkeys(code for code, _ in self.goaways)))
        if self.closed_at is not None:
            parts.append(f"closed after {self.closed_at - self.opened_at:.1f} s")
        return ", ".join(parts)

    def close(self):
        self._stop = True
        with self._lock:
            self._lock.notify_all()
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.s.close()
