"""The reliability suite's scenarios (issue #8), shared by scripts/soak (real
durations and counts; its figures go into docs/reliability.md) and the pytest
tests (test_soak_*.py: the same code with seconds and small counts).

Every scenario talks to the compiled binary through its unix socket with
Debian's python3-grpcio, or with raw bytes on the socket where grpcio would
refuse to send what we want (garbage frames, no preface, a reader that never
reads). A scenario returns a Report: figures (what docs/reliability.md shows)
and problems (each a broken promise). Tests assert `report.problems == []`;
scripts/soak prints both.
"""
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import threading
import time

import grpc

import cri_stubs
from conftest import BIN, EXAMPLES, FIXTURES, Server, oci_backend, run_cli
from synthetic import write_layout


class Report:
    def __init__(self, name):
        self.name = name
        self.figures = {}
        self.problems = []

    def problem(self, text):
        if len(self.problems) < 50:  # enough to debug; a flood would hide the summary
            self.problems.append(text)

    def __repr__(self):
        return f"Report({self.name}, figures={self.figures}, problems={self.problems})"


def pct(samples, p):
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def channel(sock, **options):
    # A subchannel pool per channel: each channel is its own connection, as separate clients are.
    opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    return grpc.insecure_channel(f"unix:{sock}", options=opts + list(options.items()))


def wait_until(predicate, timeout, step=0.02):
    """Polls until predicate() is truthy; returns the seconds it took, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def log_has(server, *needles):
    log = server.log()
    return all(n in log for n in needles)


# --- concurrent load --------------------------------------------------------------


class Load:
    """Calls from `concurrency` threads over `channels` connections until stop().

    `next_call(rng, stub, pb)` makes one call and returns (method, check), where
    check() raises AssertionError when the answer is wrong; an RpcError is a
    failed call. Latencies are kept per method."""

    def __init__(self, sock, next_call, concurrency, channels=8, timeout=30):
        self.pb, self.pbg = cri_stubs.load()
        self.next_call = next_call
        self.timeout = timeout
        self.channels = [channel(sock) for _ in range(min(channels, concurrency))]
        self.latency = {}
        self.failures = []  # (seconds since start, method, code, details)
        self.wrong = []
        self.calls = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)
        ]
        for t in self.threads:
            t.start()

    def _run(self, i):
        rng = random.Random(i)
        stub = self.pbg.ImageServiceStub(self.channels[i % len(self.channels)])
        while not self._stop.is_set():
            t0 = time.monotonic()
            method = "?"
            try:
                method, check = self.next_call(rng, stub, self.pb, self.timeout)
                elapsed = time.monotonic() - t0
                check()
            except grpc.RpcError as e:
                with self._lock:
                    self.calls += 1
                    self.failures.append((round(t0 - self.started, 3), method, e.code().name, e.details()))
                continue
            except AssertionError as e:
                with self._lock:
                    self.calls += 1
                    self.wrong.append(f"{method}: {e}")
                continue
            with self._lock:
                self.calls += 1
                self.latency.setdefault(method, []).append(elapsed)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(timeout=60)
        for c in self.channels:
            c.close()
        return self

    def figures(self):
        with self._lock:
            out = {"calls": self.calls, "failed calls": len(self.failures), "wrong answers": len(self.wrong)}
            every = [x for v in self.latency.values() for x in v]
            out["p50 ms"], out["p99 ms"] = ms(pct(every, 50)), ms(pct(every, 99))
            for method, v in sorted(self.latency.items()):
                out[f"{method} calls"] = len(v)
                out[f"{method} p99 ms"] = ms(pct(v, 99))
            return out


def list_images(stub, pb, timeout, ref=None):
    req = pb.ListImagesRequest()
    if ref is not None:
        req.filter.image.image = ref
    return stub.ListImages(req, timeout=timeout).images


def stream_images(stub, pb, timeout, ref=None):
    req = pb.StreamImagesRequest()
    if ref is not None:
        req.filter.image.image = ref
    return [image for batch in stub.StreamImages(req, timeout=timeout) for image in batch.images]


def image_status(stub, pb, timeout, ref, verbose=False):
    r = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose), timeout=timeout)
    return r.image if r.HasField("image") else None


# --- 1. load ---------------------------------------------------------------------


def scenario_load(workdir, images=10_000, duration=60.0, concurrency=64, warmup=10.0):
    """Mixed ListImages / ImageStatus / StreamImages against `images` images for
    `duration` seconds at `concurrency`: zero failed calls, RSS at the end
    against RSS after `warmup` seconds, p99 reported."""
    report = Report("load")
    layout = os.path.join(workdir, "layout")
    ids = write_layout(layout, images)
    server = Server(workdir, oci_backend(layout, name="load"))
    try:
        def next_call(rng, stub, pb, timeout):
            roll = rng.random()
            if roll < 0.05:
                got = list_images(stub, pb, timeout)
                return "ListImages", lambda: _expect(len(got) == images, f"{len(got)} images, not {images}")
            if roll < 0.10:
                got = stream_images(stub, pb, timeout)
                return "StreamImages", lambda: _expect(len(got) == images, f"{len(got)} images, not {images}")
            i = rng.randrange(images)
            ref = rng.choice([f"bench.local/edge/app{i}:1.0", "sha256:" + ids[i], ids[i][:12]])
            if roll < 0.15:
                ref = f"bench.local/edge/absent{i}:1.0"
                got = image_status(stub, pb, timeout, ref)
                return "ImageStatus", lambda: _expect(got is None, f"{ref} found")
            got = image_status(stub, pb, timeout, ref)
            return "ImageStatus", lambda: _expect(got is not None and got.id == "sha256:" + ids[i], f"{ref} → {got and got.id}")

        load = Load(server.socket, next_call, concurrency)
        rss = []
        start = time.monotonic()
        rss_warm = None
        while time.monotonic() - start < duration:
            time.sleep(0.5)
            rss.append(rss_kib(server.proc.pid))
            if rss_warm is None and time.monotonic() - start >= warmup:
                rss_warm = rss[-1]
        load.stop()
        rss_end = rss_kib(server.proc.pid)
        report.figures.update(load.figures())
        report.figures.update({
            "images": images, "concurrency": concurrency, "seconds": round(time.monotonic() - start, 1),
            "calls/s": round(load.calls / (time.monotonic() - start)),
            f"RSS after {warmup:g} s MiB": round((rss_warm or rss[0]) / 1024, 1),
            "RSS at end MiB": round(rss_end / 1024, 1),
            "RSS max MiB": round(max(rss) / 1024, 1),
        })
        growth = (rss_end - (rss_warm or rss[0])) / (rss_warm or rss[0]) * 100
        report.figures["RSS growth %"] = round(growth, 1)
        for f in load.failures[:10]:
            report.problem(f"failed call: {f}")
        for w in load.wrong[:10]:
            report.problem(f"wrong answer: {w}")
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
        report.rss_growth = growth
    finally:
        server.stop()
    return report


def _expect(condition, message):
    if not condition:
        raise AssertionError(message)


# --- 2. store churn under load ------------------------------------------------------


LAYER = b"\x1f\x8b" + bytes(range(256))  # never read; only its size counts


class ChurnedLayout:
    """An OCI layout whose index.json this process rewrites: atomically (temp
    file + rename, as skopeo and umoci do) or, when asked, in place (truncate,
    pause, write) as a careless tool would."""

    MOVING = "churn.local/moving:current"

    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.layer = self._put(LAYER)
        self.entries = {}  # tag → index.json entry
        self.moving = None  # the entry the moving tag points at

    def _put(self, data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, d), "wb") as f:
            f.write(data)
        return d

    def image(self, n):
        """Writes image n's blobs; returns (tag, expected CRI fields)."""
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {"User": str(1000 + n % 5), "Labels": {"n": str(n)}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        }).encode()
        cid = self._put(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cid, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + self.layer, "size": len(LAYER)}],
        }).encode()
        mid = "sha256:" + self._put(manifest)
        tag = f"churn.local/oci/app{n}:1"
        entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mid, "size": len(manifest),
                 "annotations": {"org.opencontainers.image.ref.name": tag}}
        want = {"id": "sha256:" + cid, "tags": {tag}, "digests": {f"churn.local/oci/app{n}@{mid}"},
                "size": len(manifest) + len(config) + len(LAYER), "uid": 1000 + n % 5}
        return tag, entry, want

    def write(self, atomic=True):
        manifests = list(self.entries.values())
        if self.moving is not None:
            manifests.append({**self.moving, "annotations": {"org.opencontainers.image.ref.name": self.MOVING}})
        text = json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()
        index = os.path.join(self.path, "index.json")
        if atomic:
            tmp = index + ".tmp"
            with open(tmp, "wb") as f:
                f.write(text)
            os.rename(tmp, index)
        else:
            with open(index, "r+b" if os.path.exists(index) else "wb") as f:
                f.truncate(0)
                f.flush()
                time.sleep(0.03)  # a reader may see the empty file, then a half-written one
                f.write(text[: len(text) // 2])
                f.flush()
                time.sleep(0.03)
                f.write(text[len(text) // 2:])


def docker_archive(path, n, tag, atomic=True):
    """A docker-archive tarball of one image; returns its expected CRI fields."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "archive", "Labels": {"n": str(n)}},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}).encode()
    cid = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": cid + ".json", "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("layer.tar", LAYER), (cid + ".json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if atomic:
        with open(path + ".part", "wb") as f:  # not a name the backend reads
            f.write(data)
        os.rename(path + ".part", path)
    else:
        with open(path, "wb") as f:  # copied in place, as scp does
            f.write(data[:1024])
            f.flush()
            time.sleep(0.05)
            f.write(data[1024:])
    return {"id": "sha256:" + cid, "tags": {tag}, "digests": set(), "size": len(config) + len(LAYER), "user": "archive"}


class Churn:
    """Changes the stores every `interval` seconds, in a fixed rotation, and
    tracks when each change became visible through the socket."""

    def __init__(self, root, base=50):
        self.lock = threading.RLock()  # the load threads read what step() changes
        self.layout = ChurnedLayout(os.path.join(root, "oci"))
        self.archives = os.path.join(root, "archives")
        os.makedirs(self.archives)
        self.cs = os.path.join(root, "containers-storage")
        shutil.copytree(os.path.join(FIXTURES, "containers-storage"), self.cs)
        images_json = os.path.join(self.cs, "vfs-images", "images.json")
        with open(images_json) as f:
            self.cs_full = json.load(f)
        # The containers/storage change: one tagged image leaves images.json and comes back.
        self.cs_victim = next(i for i in self.cs_full if i.get("names") == ["example.com/edge/two:1.0"])
        self.cs_removed = False
        self.want = {}  # image ID → expected fields, for every image that may ever be listed
        self.tag_owner = {}  # tag → image ID (each tag names one image for the whole run)
        self.n = 0
        self.oci_live = []  # tags added, oldest first
        self.archive_live = []
        self.moving_generation = -1
        self.moving_ids = []  # image IDs the moving tag pointed at, in order
        self.removed_at = {}  # image ID → monotonic time its removal was seen through the socket
        self.pending = []  # (landed, kind, ref, wanted id or None)
        self.visible_after = {}  # kind → [seconds]
        self.never_visible = []
        self.changes = 0
        self.nonatomic_done = False
        self.partial_tarball_done = False
        for _ in range(base):
            self._add_oci(write=False)
        self._retag(write=False)
        self.layout.write()
        for _ in range(3):
            self._add_archive(expect=False)

    def config(self):
        return (
            oci_backend(self.layout.path, name="churn-oci")
            + f'[[backend]]\ntype = "archives"\nname = "churn-archives"\npath = "{self.archives}"\n'
            + f'[[backend]]\ntype = "containers-storage"\nname = "churn-cs"\npath = "{self.cs}"\n'
        )

    def learn_fixed_images(self, images):
        """The containers/storage fixture's images as first served: they must stay exactly so."""
        for i in images:
            if i.id not in self.want:
                self.want[i.id] = {"id": i.id, "tags": set(i.repo_tags), "digests": set(i.repo_digests), "size": i.size}
                for t in i.repo_tags:
                    self.tag_owner[t] = i.id
        self.cs_victim_id = "sha256:" + self.cs_victim["id"]

    def _expect_visible(self, kind, ref, image_id):
        with self.lock:
            self.pending.append((time.monotonic(), kind, ref, image_id))

    def _add_oci(self, write=True, atomic=True):
        self.n += 1
        tag, entry, want = self.layout.image(self.n)
        self.want[want["id"]] = want
        self.tag_owner[tag] = want["id"]
        self.layout.entries[tag] = entry
        self.oci_live.append(tag)
        if write:
            self.layout.write(atomic)
            self._expect_visible("oci add" if atomic else "oci add (in-place rewrite)", tag, want["id"])

    def _remove_oci(self):
        if len(self.oci_live) < 10:
            return self._add_oci()
        tag = self.oci_live.pop(0)
        if self.layout.moving is self.layout.entries[tag]:
            self.oci_live.append(tag)  # keep the moving tag's image; remove the next one
            tag = self.oci_live.pop(0)
        del self.layout.entries[tag]
        self.layout.write()
        self._expect_visible("oci remove", tag, None)

    def _retag(self, write=True):
        tag = self.oci_live[-1]
        self.layout.moving = self.layout.entries[tag]
        self.moving_generation += 1
        image_id = self.tag_owner[tag]
        self.moving_ids.append(image_id)
        if write:
            self.layout.write()
            self._expect_visible("oci retag", ChurnedLayout.MOVING, image_id)

    def _add_archive(self, atomic=True, expect=True):
        self.n += 1
        tag = f"churn.local/archive/app{self.n}:1"
        want = docker_archive(os.path.join(self.archives, f"app{self.n}.tar"), self.n, tag, atomic)
        self.want[want["id"]] = want
        self.tag_owner[tag] = want["id"]
        self.archive_live.append((tag, self.n))
        if expect:
            self._expect_visible("archive add" if atomic else "archive add (copied in place)", tag, want["id"])

    def _remove_archive(self):
        if len(self.archive_live) < 3:
            return self._add_archive()
        tag, n = self.archive_live.pop(0)
        os.unlink(os.path.join(self.archives, f"app{n}.tar"))
        self._expect_visible("archive remove", tag, None)

    def _toggle_cs(self):
        images = [i for i in self.cs_full if not (i is self.cs_victim and not self.cs_removed)]
        images_json = os.path.join(self.cs, "vfs-images", "images.json")
        with open(images_json + ".tmp", "w") as f:
            json.dump(images, f)
        os.rename(images_json + ".tmp", images_json)  # c/storage's own way
        self.cs_removed = not self.cs_removed
        if not self.cs_removed:
            self.removed_at.pop(self.cs_victim_id, None)  # back on purpose, from this instant
        self._expect_visible("containers-storage replace", "example.com/edge/two:1.0", None if self.cs_removed else self.cs_victim_id)

    def step(self, tick):
        """One change; the rotation covers every kind within 10 ticks."""
        with self.lock:
            self._step(tick % 10)
        self.changes += 1

    def _step(self, op):
        if op == 3 and not self.nonatomic_done:
            self.nonatomic_done = True
            self._add_oci(atomic=False)
        elif op == 7 and not self.partial_tarball_done:
            self.partial_tarball_done = True
            self._add_archive(atomic=False)
        else:
            [self._add_oci, self._add_archive, self._retag, self._toggle_cs, self._remove_oci,
             self._remove_archive, self._add_oci, self._add_archive, self._remove_oci, self._remove_archive][op]()

    def probe(self, stub, pb):
        """Checks each change not yet seen; records how long it took to show."""
        with self.lock:
            pending = list(self.pending)
        now = time.monotonic()
        for item in pending:
            landed, kind, ref, image_id = item
            got = image_status(stub, pb, 10, ref)
            if (got.id if got else None) == image_id:
                seen = time.monotonic()
                with self.lock:
                    self.pending.remove(item)
                    self.visible_after.setdefault(kind, []).append(seen - landed)
                    if image_id is None:
                        self.removed_at[self.tag_owner[ref]] = seen
            elif kind == "oci retag" and got is not None and self.moving_ids.index(got.id) > self.moving_ids.index(image_id):
                with self.lock:  # overtaken by the next retag before we looked: not a failure
                    self.pending.remove(item)
            elif now - landed > 10:
                with self.lock:
                    self.pending.remove(item)
                    self.never_visible.append(f"{kind} {ref} not visible after 10 s")

    def check_list(self, images, started):
        """One ListImages/StreamImages answer: a consistent snapshot of some moment."""
        seen_tags = {}
        moving = 0
        for i in images:
            want = self.want.get(i.id)
            _expect(want is not None, f"unknown image {i.id}")
            tags = set(i.repo_tags)
            if ChurnedLayout.MOVING in tags:
                moving += 1
                tags.discard(ChurnedLayout.MOVING)
            _expect(tags == want["tags"], f"{i.id} tags {sorted(tags)} != {sorted(want['tags'])}")
            digests = {d for d in i.repo_digests if not d.startswith("churn.local/moving@")}
            _expect(digests == want["digests"], f"{i.id} digests {sorted(digests)} != {sorted(want['digests'])}")
            _expect(i.size == want["size"], f"{i.id} size {i.size} != {want['size']}")
            if "uid" in want:
                _expect(i.uid.value == want["uid"], f"{i.id} uid {i.uid.value} != {want['uid']}")
            for t in i.repo_tags:
                _expect(t not in seen_tags, f"tag {t} on {seen_tags.get(t)} and {i.id}")
                seen_tags[t] = i.id
            gone = self.removed_at.get(i.id)
            _expect(gone is None or gone > started, f"{i.id} listed again after its removal was seen")
        _expect(moving == 1, f"the moving tag is on {moving} images")

    def check_status(self, ref, got, started, last_moving):
        if got is None:
            return last_moving
        if ref == ChurnedLayout.MOVING:
            g = self.moving_ids.index(got.id) if got.id in self.moving_ids else -1
            _expect(g >= 0, f"moving tag on {got.id}, an image it never named")
            _expect(g >= last_moving, f"moving tag went back from generation {last_moving} to {g}")
            return g
        _expect(got.id == self.tag_owner[ref], f"{ref} → {got.id}, not {self.tag_owner[ref]}")
        gone = self.removed_at.get(got.id)
        _expect(gone is None or gone > started, f"{ref} found after its removal was seen")
        return last_moving


def scenario_churn(workdir, duration=60.0, interval=0.1, concurrency=16, base=50):
    """Store churn under load: every `interval` s an image is added or removed in
    an OCI layout (atomically, once in place), a tarball appears or vanishes,
    a containers/storage images.json is replaced. Every answer must be a
    consistent snapshot, no call may fail, each change visible within 1 s."""
    report = Report("churn")
    churn = Churn(os.path.join(workdir, "stores"), base)
    server = Server(workdir, churn.config())
    try:
        pb, pbg = cri_stubs.load()
        ch = channel(server.socket)
        stub = pbg.ImageServiceStub(ch)
        churn.learn_fixed_images(list_images(stub, pb, 10))
        tags = list(churn.tag_owner) + [ChurnedLayout.MOVING]
        last_moving = {}

        def next_call(rng, stub, pb, timeout):
            started = time.monotonic()
            roll = rng.random()
            if roll < 0.2:
                got = list_images(stub, pb, timeout)
                return "ListImages", lambda: churn.check_list(got, started)
            if roll < 0.3:
                got = stream_images(stub, pb, timeout)
                return "StreamImages", lambda: churn.check_list(got, started)
            with churn.lock:
                ref = rng.choice(tags if rng.random() < 0.5 else list(churn.tag_owner))
            got = image_status(stub, pb, timeout, ref)

            def check():
                key = threading.get_ident()
                last_moving[key] = churn.check_status(ref, got, started, last_moving.get(key, -1))
            return "ImageStatus", check

        load = Load(server.socket, next_call, concurrency)
        stop = threading.Event()
        probe_errors = []

        def prober():
            probe_stub = pbg.ImageServiceStub(channel(server.socket))
            while not stop.is_set():
                try:
                    churn.probe(probe_stub, pb)
                except grpc.RpcError as e:
                    probe_errors.append(f"{e.code().name}: {e.details()}")
                time.sleep(0.01)

        probing = threading.Thread(target=prober, daemon=True)
        probing.start()
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < duration:
            churn.step(tick)
            tick += 1
            time.sleep(max(0.0, start + tick * interval - time.monotonic()))
        # The last changes get their second to show.
        wait_until(lambda: not churn.pending, 11)
        stop.set()
        probing.join(timeout=30)
        load.stop()
        ch.close()
        report.figures.update(load.figures())
        every = [x for v in churn.visible_after.values() for x in v]
        report.figures.update({
            "seconds": round(time.monotonic() - start, 1), "changes": churn.changes,
            "changes seen": len(every), "visible p50 ms": ms(pct(every, 50)), "visible p99 ms": ms(pct(every, 99)),
            "visible max ms": ms(max(every, default=None)),
        })
        for kind, v in sorted(churn.visible_after.items()):
            report.figures[f"{kind}: max ms"] = ms(max(v))
        for f in load.failures[:10]:
            report.problem(f"failed call: {f}")
        for w in load.wrong[:10]:
            report.problem(f"inconsistent answer: {w}")
        for e in probe_errors[:5]:
            report.problem(f"failed probe call: {e}")
        for n in churn.never_visible[:10]:
            report.problem(n)
        late = [(k, round(x, 3)) for k, v in churn.visible_after.items() for x in v if x > 1.0]
        for k, x in late[:10]:
            report.problem(f"{k} took {x} s to show")
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
    finally:
        server.stop()
    return report


# --- 3. faults ------------------------------------------------------------------------

# A module plugin (the built-ins' own contract) that misbehaves as its mode file says.
SWITCH_PLUGIN = """
import { readFileSync } from "node:fs";
const ID = "sha256:" + "7".repeat(64);
export default {
  name: "switch",
  apiVersion: 1,
  options: { mode_file: { type: "string", required: true } },
  create(options) {
    return {
      list() {
        const mode = readFileSync(options.mode_file, "utf8").trim();
        if (mode === "throw") throw new Error("switch plugin exploded");
        // A hang that ends when mended (a lock released); one that never ends is
        // never called again (README, "How backends are contained").
        if (mode === "hang") return new Promise((done) => {
          const t = setInterval(() => readFileSync(options.mode_file, "utf8").trim() !== "hang" && (clearInterval(t), done([])), 50);
        });
        if (mode === "garbage") return [{ id: "not-an-id", size: -1 }];
        return [{ id: ID, repoTags: ["switch.local/plugin:1"], repoDigests: [], size: 42, kind: "oci" }];
      },
    };
  },
};
"""

# An exec plugin (POSIX shell) that misbehaves as its mode file says.
SWITCH_EXEC = """#!/bin/sh
case "$(cat "$1")" in
  crash) echo "exec plugin database is locked" >&2; exit 3 ;;
  garbage) echo "this is not json" ;;
  hang) sleep 30 ;;
  *) echo '{"protocol":1,"images":[{"id":"sha256:8888888888888888888888888888888888888888888888888888888888888888","repoTags":["switch.local/exec:1"],"repoDigests":[],"size":43,"kind":"oci"}]}' ;;
esac
"""

NOBODY = 65534


def unprivileged():
    """How to run imagelet so that mode 000 means something: as nobody when we
    are root (root reads everything), as ourselves otherwise; None when root
    cannot drop privileges here."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        return None
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")


def share_with(path, uid):
    """Makes a test directory usable by the (unprivileged) server."""
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                p = os.path.join(root, name)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o755 if os.path.isdir(p) else os.stat(p).st_mode | 0o644)


class Faults:
    """The stores and plugins the fault scenario breaks and mends, one at a time."""

    def __init__(self, root):
        self.root = root
        self.modes = {}
        layouts = ("deleted", "unreadable", "looped", "blob")
        self.layouts = {name: os.path.join(root, name) for name in layouts}
        for path in self.layouts.values():
            shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), path)
        plugins = os.path.join(root, "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "switch.ts"), "w") as f:
            f.write(SWITCH_PLUGIN)
        self.exec_path = os.path.join(root, "switch-exec.sh")
        with open(self.exec_path, "w") as f:
            f.write(SWITCH_EXEC)
        os.chmod(self.exec_path, 0o755)
        for name in ("module", "exec"):
            self.set_mode(name, "ok")
        self.plugin_dir = plugins

    def mode_file(self, name):
        return os.path.join(self.root, f"{name}.mode")

    def set_mode(self, name, mode):
        with open(self.mode_file(name), "w") as f:
            f.write(mode)
        os.chmod(self.mode_file(name), 0o644)

    def config(self):
        text = 'poll_interval = "1s"\nbackend_timeout = "1s"\n'
        text += f'plugin_dir = "{self.plugin_dir}"\n'
        text += oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")
        for name, path in self.layouts.items():
            text += oci_backend(path, name=f"victim-{name}")
        text += f'[[backend]]\ntype = "switch"\nname = "module-plugin"\nmode_file = "{self.mode_file("module")}"\n'
        text += (f'[[backend]]\ntype = "exec"\nname = "exec-plugin"\npath = "{self.exec_path}"\n'
                 f'args = ["{self.mode_file("exec")}"]\n')
        return text

    def faults(self, can_unread):
        """Fault(name, backend, break, mend, the words the log and `imagelet plugins` use)."""
        d = self.layouts
        out = []
        for mode, name, says in (("throw", "throws", "exploded"), ("hang", "hangs", "timed out"), ("garbage", "returns garbage", "record 0")):
            out.append(Fault(f"module plugin {name}", "module-plugin", lambda m=mode: self.set_mode("module", m),
                             lambda: self.set_mode("module", "ok"), says))
        for mode, name, says in (("crash", "crashes", "exited with status 3"), ("garbage", "returns garbage", "stdout is not JSON"),
                                 ("hang", "hangs", "timed out")):
            out.append(Fault(f"exec plugin {name}", "exec-plugin", lambda m=mode: self.set_mode("exec", m),
                             lambda: self.set_mode("exec", "ok"), says))
        out.append(Fault("store directory deleted", "victim-deleted",
                         lambda: os.rename(d["deleted"], d["deleted"] + ".away"),
                         lambda: os.rename(d["deleted"] + ".away", d["deleted"]), "ENOENT"))
        if can_unread:
            out.append(Fault("store directory made mode 000", "victim-unreadable",
                             lambda: os.chmod(d["unreadable"], 0), lambda: os.chmod(d["unreadable"], 0o755), "EACCES"))

        def loop():
            os.rename(d["looped"], d["looped"] + ".away")
            os.symlink(os.path.basename(d["looped"]), d["looped"])  # a link to itself

        def unloop():
            os.unlink(d["looped"])
            os.rename(d["looped"] + ".away", d["looped"])
        out.append(Fault("store directory replaced by a symlink loop", "victim-looped", loop, unloop, "ELOOP"))
        out.append(self._vanishing_blob())
        return out

    def _vanishing_blob(self):
        """A manifest blob removed after the layout was listed: the image is
        still answered from the snapshot until the layout changes, then skipped
        (logged with the blob's path); the rest of the layout stays."""
        layout = self.layouts["blob"]
        with open(os.path.join(layout, "index.json")) as f:
            index = json.load(f)
        entry = index["manifests"][0]
        blob = os.path.join(layout, "blobs", "sha256", entry["digest"].split(":")[1])
        # Every bare-tag name of that manifest (umoci gives one manifest several) goes with it.
        names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"] if m["digest"] == entry["digest"]]
        refs = [f"localhost/blob:{n}" for n in names if not any(c in n for c in "/:@")]
        saved = os.path.join(self.root, "saved-blob")

        def touch_index():
            # The same index.json written anew, as a tool adding an image would: the layout is re-listed.
            index = os.path.join(layout, "index.json")
            shutil.copy(index, index + ".tmp")
            os.rename(index + ".tmp", index)

        def lose():
            os.rename(blob, saved)
            time.sleep(0.2)  # listed before, status after: served from the snapshot
            touch_index()

        def find():
            os.rename(saved, blob)
            touch_index()
        return Fault("manifest blob disappears after listing", "victim-blob", lose, find, blob, names=refs)


class Fault:
    def __init__(self, name, backend, inject, mend, says, names=()):
        self.name, self.backend, self.inject, self.mend, self.says = name, backend, inject, mend, says
        # A bad entry is skipped and logged (its names go), but the backend itself stays ok.
        self.names = names


def cli(*args, wrapper=()):
    return subprocess.run([*wrapper, BIN, *args], capture_output=True, text=True, timeout=60)


def log_lines_since(server, offset, *needles):
    return [l for l in server.log()[offset:].splitlines() if all(n in l for n in needles)]


def scenario_faults(workdir, load_concurrency=8, hold=1.0):
    """Each fault in turn, under load: imagelet stays up, keeps serving the
    other backends, says what broke in its log (backend and path) and in
    `imagelet plugins`, and takes the backend back once it is mended."""
    report = Report("faults")
    wrapper = unprivileged()
    os.chmod(workdir, 0o755)
    root = os.path.join(workdir, "stores")
    os.makedirs(root)
    stores = Faults(root)
    run = os.path.join(workdir, "run")
    os.makedirs(run)
    if wrapper:
        os.chown(run, NOBODY, NOBODY)
    share_with(root, NOBODY)
    server = Server(workdir, stores.config(), wrapper=wrapper or ())
    try:
        sample_tags = {"docker.io/library/edge-tools:2.0", "example.com/edge/hello:1.0"}

        def next_call(rng, stub, pb, timeout):
            if rng.random() < 0.3:
                got = list_images(stub, pb, timeout)
                return "ListImages", lambda: _expect(sample_tags <= {t for i in got for t in i.repo_tags}, "sample images missing")
            ref = rng.choice(sorted(sample_tags))
            got = image_status(stub, pb, timeout, ref)
            return "ImageStatus", lambda: _expect(got is not None, f"{ref} not found")

        load = Load(server.socket, next_call, load_concurrency)
        faults = stores.faults(can_unread=wrapper is not None)
        for fault in faults:
            offset = len(server.log())
            fault.inject()
            detected = wait_until(lambda: log_lines_since(server, offset, f"backend={fault.backend}", fault.says), 15)
            time.sleep(hold)
            out = cli("plugins", "--config", server.config, "--log-level", "error", wrapper=wrapper or ())
            row = next((l for l in out.stdout.splitlines() if l.startswith(fault.backend + " ")), "")
            if fault.names:
                if wait_until(lambda: not any(server.image_status(n).HasField("image") for n in fault.names), 15) is None:
                    report.problem(f"{fault.name}: {fault.names} still served")
                if " ok " not in row:
                    report.problem(f"{fault.name}: imagelet plugins says {row!r}")
            elif "failing" not in row or fault.says not in row:
                report.problem(f"{fault.name}: imagelet plugins says {row!r}")
            alive = server.proc.poll() is None
            offset = len(server.log())
            fault.mend()
            if fault.names:
                recovered = wait_until(lambda: all(server.image_status(n).HasField("image") for n in fault.names), 15)
            else:
                recovered = wait_until(lambda: log_lines_since(server, offset, "backend recovered", f"backend={fault.backend}"), 15)
            report.figures[f"{fault.name}: logged after ms"] = ms(detected)
            report.figures[f"{fault.name}: back after mending ms"] = ms(recovered)
            if detected is None:
                report.problem(f"{fault.name}: no log line with backend={fault.backend} and {fault.says!r}")
            if recovered is None:
                report.problem(f"{fault.name}: {fault.backend} not back within 15 s of being mended")
            if not alive:
                report.problem(f"{fault.name}: imagelet exited")
                break
        load.stop()
        report.figures.update(load.figures())
        report.figures["faults"] = len(faults)
        if wrapper is None:
            report.figures["note"] = "mode 000 not tried: running as root without setpriv"
        for f in load.failures[:10]:
            report.problem(f"failed call: {f}")
        for w in load.wrong[:10]:
            report.problem(f"wrong answer: {w}")
    finally:
        server.stop()
        if os.path.isdir(stores.layouts["unreadable"]):
            os.chmod(stores.layouts["unreadable"], 0o755)
    return report
