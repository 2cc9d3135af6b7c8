"""The reliability suite's mirror scenario (issue 22): hostile and unlucky
clients of the mirror port, while a CRI client asks ImageStatus every 20 ms on
the unix socket. Shared by scripts/soak (`--only mirror`: real sizes and
durations) and test_soak_mirror.py (seconds).

Parts, one after another on one server:
  - slow readers (a few KiB per read, a pause between) and clients that never read;
  - clients that vanish mid-blob (closed, or reset with SO_LINGER 0);
  - 1,000 connections (idle, or a request's headers never finished), then closed;
  - oversized requests (a 1 MiB header, 10,000 headers, a 1 MiB path, headers that never end);
  - the store changing during a download (the blob removed with its image, replaced by
    rename, rewritten in place, truncated): the body must be the old bytes or be cut
    short, never a whole body with other bytes (its sha256 is checked).
Promises: the process lives, the CRI client is answered throughout (no call fails,
none waits longer than `cri_limit_s`), a fresh download is right after each part,
RSS stays bounded (bodies are streamed), and file descriptors come back.
"""
import os
import random
import resource
import shutil
import socket
import subprocess
import threading
import time

import cri_stubs
from conftest import Server
from h2_abuse import Sampler
from mirror_http import fetch, free_port, wait_for_v2, write_big_layout
from soak_scenarios import Report, channel, image_status, ms, pct

REF = "docker.io/soak/big:1.0"
REPO = "soak/big"
REBUILT_REF = "docker.io/soak/rebuilt:1.0"  # copied by skopeo into containers-storage (vfs)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class CriWatch:
    """ImageStatus of `ref` every 20 ms on the CRI socket until stop()."""

    def __init__(self, sock, ref):
        self.ref = ref
        self.pb, pbg = cri_stubs.load()
        self.channel = channel(sock)
        self.stub = pbg.ImageServiceStub(self.channel)
        self.latencies, self.failures = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            t = time.monotonic()
            try:
                found = image_status(self.stub, self.pb, 30, self.ref) is not None
                self.latencies.append(time.monotonic() - t)
                if not found:
                    self.failures.append(f"{self.ref} not found")
            except Exception as e:  # grpc.RpcError, or the channel closed under us at the end
                self.failures.append(str(e)[:200])

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.channel.close()


class Target:
    """What the scenario needs of the server under test: its mirror port, its process,
    its CRI socket, the blob's URL path, and the file in the store the blob's bytes
    come from (which the store-change part alters and restores): for an OCI layout the
    blob itself, for containers/storage the layer's one file."""

    def __init__(self, name, port, pid, socket_path, blob_path, blob_file, index_file, digest, size):
        self.name, self.port, self.pid, self.socket = name, port, pid, socket_path
        self.blob_path, self.blob_file, self.index_file = blob_path, blob_file, index_file
        self.digest, self.size = digest, size


def _raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def _right_download(t, report, after):
    got = fetch(t.port, t.blob_path, timeout=120)
    if (got.status, got.digest) != (200, t.digest):
        report.problem(f"after {after}: a fresh download answered {got.status}, {got.size} bytes, {got.digest} {got.error or ''}")
    return got


def slow_and_stalled(t, report, readers, stalled, seconds):
    """`readers` clients reading 16 KiB every 50 ms and `stalled` that send a GET and never read, for `seconds`."""
    done = []

    def slow():
        got = fetch(t.port, t.blob_path, chunk=16 << 10, read_delay=0.05, stop_after=int(seconds / 0.05) * (16 << 10), timeout=seconds + 30)
        done.append(got)

    stalled_socks = []
    for _ in range(stalled):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {t.blob_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        stalled_socks.append(s)
    threads = [threading.Thread(target=slow, daemon=True) for _ in range(readers)]
    rss = Sampler(t.pid)
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 30)
    rss.stop()
    for s in stalled_socks:
        s.close()
    errors = [g.error for g in done if g.error]
    report.figures.update({
        "slow readers": readers, "slow readers: MiB read": round(sum(g.size for g in done) / 2**20, 1),
        "slow readers: errors": len(errors), "never-reading clients": stalled,
        "slow/never-reading: RSS growth MiB": round((rss.peak - rss.before) / 1024, 1),
    })
    for e in errors[:3]:
        report.problem(f"slow reader: {e}")
    _right_download(t, report, "slow readers")


def vanishing(t, report, clients, most_mib, seed=22):
    """`clients` downloads abandoned after a random 0..most_mib MiB; every other one reset (SO_LINGER 0)."""
    rng = random.Random(seed)
    for i in range(clients):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        s.sendall(f"GET {t.blob_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        want = rng.randrange(0, most_mib << 20)
        got = 0
        while got < want:
            block = s.recv(1 << 20)
            if not block:
                break
            got += len(block)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # l_onoff=1, l_linger=0: RST
        s.close()
    report.figures["clients that vanished mid-blob"] = clients
    _right_download(t, report, "vanishing clients")


def many_connections(t, report, count, hold_s):
    """`count` connections: half idle, half with a request's headers never finished; a normal client meanwhile."""
    _raise_fd_limit(count + 512)
    started = time.monotonic()
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        if i % 2:
            s.sendall(f"GET {t.blob_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unfinished: ".encode())
        socks.append(s)
    report.figures["connections opened"] = count
    report.figures["seconds to open them"] = round(time.monotonic() - started, 2)
    normal = [fetch(t.port, f"/v2/{REPO}/manifests/1.0", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30)
              for _ in range(5)]
    report.figures["normal client during them: p50 ms"] = ms(pct([g.seconds for g in normal], 50))
    for g in normal:
        if g.status != 200:
            report.problem(f"a manifest GET during {count} connections answered {g.status} {g.error or ''}")
    big = _right_download(t, report, f"{count} connections open")
    report.figures["a blob download during them: s"] = round(big.seconds, 2)
    time.sleep(hold_s)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    report.figures[f"closed by the server within {hold_s:g} s"] = closed
    for s in socks:
        s.close()


OVERSIZED = {
    "a 1 MiB header": lambda t: f"GET {t.blob_path} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * (1 << 20)}\r\n\r\n".encode(),
    "10,000 headers": lambda t: (f"GET {t.blob_path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(10_000)) + "\r\n").encode(),
    "a 1 MiB path": lambda t: f"GET /v2/{'a/' * (1 << 19)}manifests/1.0 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
}


def oversized(t, report, endless_mib):
    """Each oversized request on its own connection: the answer's status line, or how the connection ended."""
    for name, make in OVERSIZED.items():
        report.figures[f"{name}: answer"] = _send_and_read_status(t.port, make(t))
    # Headers that never end: sent until the server stops reading or closes.
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    sent, line = 0, b"X-More: " + b"m" * 1000 + b"\r\n"
    s.settimeout(5)
    outcome = None
    try:
        while sent < endless_mib << 20:
            s.sendall(line)
            sent += len(line)
    except (socket.timeout, OSError) as e:
        outcome = f"stopped after {sent >> 10} KiB sent ({type(e).__name__})"
    if outcome is None:
        outcome = _read_status(s) + f" after {sent >> 20} MiB sent"
    s.close()
    report.figures["headers that never end: outcome"] = outcome
    _right_download(t, report, "oversized requests")


def _send_and_read_status(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
    except OSError as e:
        s.close()
        return f"closed while sending ({type(e).__name__})"
    try:
        return _read_status(s)
    finally:
        s.close()


def _read_status(s):
    s.settimeout(10)
    try:
        first = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
        return first or "closed without an answer"
    except socket.timeout:
        return "no answer within 10 s"
    except OSError as e:
        return f"closed ({type(e).__name__})"


def _change(t, mode, saved_blob, saved_index):
    """Alters the store as `mode` says; returns the function that restores it."""
    if mode == "removed":
        if t.index_file:
            with open(t.index_file + ".tmp", "w") as f:
                f.write('{"schemaVersion":2,"manifests":[]}')
            os.rename(t.index_file + ".tmp", t.index_file)
        os.unlink(t.blob_file)
    elif mode == "replaced by rename":
        with open(t.blob_file + ".new", "wb") as f:
            f.write(os.urandom(os.path.getsize(t.blob_file)))
        os.rename(t.blob_file + ".new", t.blob_file)
    elif mode == "rewritten in place":
        size = os.path.getsize(t.blob_file)
        with open(t.blob_file, "r+b") as f:
            for _ in range(0, size, 1 << 20):
                f.write(os.urandom(1 << 20))
            f.truncate(size)
    elif mode == "truncated to half":
        os.truncate(t.blob_file, os.path.getsize(t.blob_file) // 2)

    def restore():
        shutil.copyfile(saved_blob, t.blob_file + ".restore")
        os.rename(t.blob_file + ".restore", t.blob_file)
        if t.index_file:
            shutil.copyfile(saved_index, t.index_file + ".restore")
            os.rename(t.index_file + ".restore", t.index_file)
    return restore


# "removed": for an OCI layout, the image leaves index.json and its blob is unlinked (RemoveImage, a
# garbage collection); for containers/storage, the layer's file is unlinked.
CHANGE_MODES = ("removed", "replaced by rename", "rewritten in place", "truncated to half")


def store_changes(t, report, work, repeats, modes=CHANGE_MODES):
    """A download under way (read 256 KiB at a time, 10 ms apart) when the store changes under it."""
    saved_blob = os.path.join(work, f"saved-{t.name}")
    shutil.copyfile(t.blob_file, saved_blob)
    saved_index = None
    if t.index_file:
        saved_index = os.path.join(work, f"saved-{t.name}-index.json")
        shutil.copyfile(t.index_file, saved_index)
    for mode in modes:
        outcomes = {"old bytes": 0, "cut short": 0}
        for _ in range(repeats):
            restore = None
            changed = threading.Event()

            def on_progress(size, mode=mode):
                nonlocal restore
                if restore is None and size >= 1 << 20:
                    restore = _change(t, mode, saved_blob, saved_index)
                    changed.set()

            # A new ctime, so the file has not been verified since its last change and is sent hashed. An
            # in-place overwrite during a sendfile of bytes verified before is the one window left, which only
            # the client's digest check catches (docs/mirror.md, "Bytes"); it is not what this part tests.
            os.utime(t.blob_file)
            got = fetch(t.port, t.blob_path, chunk=256 << 10, read_delay=0.01, timeout=120, progress=on_progress)
            if restore is None:
                report.problem(f"{t.name}, {mode}: the download ended before the change ({got.status}, {got.size} bytes, {got.error})")
                continue
            restore()
            if got.error or got.size < t.size:
                outcomes["cut short"] += 1
            elif got.digest == t.digest:
                outcomes["old bytes"] += 1
            else:
                outcomes["MIXED"] = outcomes.get("MIXED", 0) + 1
                report.problem(f"{t.name}, {mode}: a whole {got.size}-byte body whose sha256 is {got.digest}, not {t.digest}")
            # The store is whole again: wait until the mirror serves the blob again.
            if not _wait(lambda: fetch(t.port, t.blob_path, method="HEAD", timeout=10).status == 200, 30):
                report.problem(f"{t.name}, {mode}: the blob was not served again within 30 s of the store's repair")
        report.figures[f"{t.name}, {mode}: outcomes"] = ", ".join(f"{k} {v}" for k, v in outcomes.items())
    _right_download(t, report, f"the {t.name} changes")


def _wait(predicate, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def run_parts(t, report, work, sizes, rebuilt=None, cri_ref=REF):
    """Every part against `t`; the store changes also against `rebuilt` (a layer re-created from
    containers/storage). The CRI client asks about `cri_ref`, an image no part removes."""
    watch = CriWatch(t.socket, cri_ref)
    rss = Sampler(t.pid)
    fds_before = fd_count(t.pid)
    started = time.monotonic()
    try:
        slow_and_stalled(t, report, sizes["slow_readers"], sizes["stalled"], sizes["slow_seconds"])
        vanishing(t, report, sizes["vanishing"], sizes["vanish_mib"])
        many_connections(t, report, sizes["connections"], sizes["hold_seconds"])
        oversized(t, report, sizes["endless_mib"])
        for target in (t, rebuilt):
            if target is not None:
                store_changes(target, report, work, sizes["change_repeats"])
    finally:
        watch.stop()
        rss.stop()
    # File descriptors come back once every client has gone.
    back = _wait(lambda: fd_count(t.pid) <= fds_before + 2, 30)
    report.figures.update({
        "seconds": round(time.monotonic() - started, 1),
        "CRI ImageStatus calls": len(watch.latencies), "CRI failures": len(watch.failures),
        "CRI p50 ms": ms(pct(watch.latencies, 50)), "CRI p99 ms": ms(pct(watch.latencies, 99)),
        "CRI max ms": ms(max(watch.latencies, default=None)),
        "RSS before MiB": round(rss.before / 1024, 1), "RSS peak MiB": round(rss.peak / 1024, 1),
        "open fds before / after": f"{fds_before} / {fd_count(t.pid)}",
    })
    for f in watch.failures[:5]:
        report.problem(f"CRI client: {f}")
    if watch.latencies and max(watch.latencies) > sizes["cri_limit_s"]:
        report.problem(f"a CRI ImageStatus waited {max(watch.latencies):.2f} s (limit {sizes['cri_limit_s']} s)")
    if not back:
        report.problem(f"file descriptors: {fds_before} before, {fd_count(t.pid)} 30 s after the last client")
    if (rss.peak - rss.before) / 1024 > sizes["rss_limit_mib"]:
        report.problem(f"RSS grew {(rss.peak - rss.before) / 1024:.0f} MiB (limit {sizes['rss_limit_mib']} MiB)")


SHORT = {"blob_mib": 16, "rebuilt_mib": 8, "slow_readers": 8, "stalled": 8, "slow_seconds": 2.0, "vanishing": 40, "vanish_mib": 8,
         "connections": 1000, "hold_seconds": 1.0, "endless_mib": 16, "change_repeats": 1, "cri_limit_s": 2.0,
         "rss_limit_mib": 64}
FULL = {"blob_mib": 256, "rebuilt_mib": 64, "slow_readers": 50, "stalled": 50, "slow_seconds": 30.0, "vanishing": 1000, "vanish_mib": 16,
        "connections": 1000, "hold_seconds": 15.0, "endless_mib": 64, "change_repeats": 3, "cri_limit_s": 1.0,
        "rss_limit_mib": 64}


def containers_storage_copy(workdir, mib):
    """A second image, its layer of `mib` MiB, copied by skopeo into a containers-storage root
    (vfs driver). Returns (graph root, layer digest, layer size, the layer's one file on disk)."""
    layout = os.path.join(workdir, "layout-rebuilt")
    image = write_big_layout(layout, REBUILT_REF, mib << 20)
    root, run_root = os.path.join(workdir, "cs"), os.path.join(workdir, "cs-run")
    r = subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:{REBUILT_REF}", f"containers-storage:[vfs@{root}+{run_root}]{REBUILT_REF}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(layout)
    # The bottom layer's ID is its diff_id's hex; vfs keeps the layer as a directory tree.
    data = os.path.join(root, "vfs", "dir", image["layer"][7:], "data", "payload.bin")
    assert os.path.isfile(data), data
    return root, image["layer"], image["layer_size"], data


def scenario_mirror(workdir, sizes=SHORT):
    """imagelet serving an OCI layout (one image, one layer of sizes["blob_mib"]) and a
    containers-storage root (one image, one smaller layer re-created on request) with
    its mirror on loopback."""
    report = Report("mirror")
    layout = os.path.join(workdir, "layout")
    image = write_big_layout(layout, REF, sizes["blob_mib"] << 20)
    cs_root, cs_layer, cs_size, cs_file = containers_storage_copy(workdir, sizes["rebuilt_mib"])
    port = free_port()
    _raise_fd_limit(sizes["connections"] + 512)  # inherited by imagelet too
    server = Server(workdir, f'[mirror]\nlisten = "127.0.0.1:{port}"\n'
                             f'[[backend]]\ntype = "oci-layout"\npath = "{layout}"\n'
                             f'[[backend]]\ntype = "containers-storage"\npath = "{cs_root}"\ndriver = "vfs"\n')
    try:
        wait_for_v2(port, server.proc, server.log_path)
        blob_file = os.path.join(layout, "blobs", "sha256", image["layer"][7:])
        t = Target("OCI layout", port, server.proc.pid, server.socket, f"/v2/{REPO}/blobs/{image['layer']}", blob_file,
                   os.path.join(layout, "index.json"), image["layer"], image["layer_size"])
        rebuilt = Target("containers-storage", port, server.proc.pid, server.socket,
                         f"/v2/soak/rebuilt/blobs/{cs_layer}", cs_file, None, cs_layer, cs_size)
        # A preloaded blob: changed over 2 s ago, so its first download verifies it and later ones go by
        # sendfile. One changed more recently is streamed, hashed, to every client (docs/mirror.md,
        # "Bytes"); the store changes below test that.
        time.sleep(max(0.0, 2.1 - (time.time() - os.stat(blob_file).st_ctime)))
        _right_download(t, report, "start")
        _right_download(rebuilt, report, "start")
        run_parts(t, report, workdir, sizes, rebuilt, cri_ref=REBUILT_REF)
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
    finally:
        server.stop()
    return report


def scenario_store_change(workdir, mode, blob_mib=16, repeats=1):
    """Only the store change `mode` under a download, on an OCI layout's blob."""
    report = Report("store change")
    layout = os.path.join(workdir, "layout")
    image = write_big_layout(layout, REF, blob_mib << 20)
    port = free_port()
    server = Server(workdir, f'[mirror]\nlisten = "127.0.0.1:{port}"\n[[backend]]\ntype = "oci-layout"\npath = "{layout}"\n')
    try:
        wait_for_v2(port, server.proc, server.log_path)
        t = Target("OCI layout", port, server.proc.pid, server.socket, f"/v2/{REPO}/blobs/{image['layer']}",
                   os.path.join(layout, "blobs", "sha256", image["layer"][7:]), os.path.join(layout, "index.json"),
                   image["layer"], image["layer_size"])
        store_changes(t, report, workdir, repeats, modes=(mode,))
    finally:
        server.stop()
    return report
