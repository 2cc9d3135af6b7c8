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
from conftest import BIN, EXAMPLES, FIXTURES, Server, oci_backend
from synthetic import write_layout
import written_manifest


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

    def __init__(self, sock, next_call, concurrency, channels=8, timeout=30, pause_after_failure=0.0):
        self.pause_after_failure = pause_after_failure
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
                time.sleep(self.pause_after_failure)  # a server that is down refuses at once: do not spin
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
    # A docker-archive keeps no registry manifest: its repo digest is the manifest imagelet writes (docs/mirror.md).
    # LAYER looks gzipped, so its uncompressed length is read from the gzip trailer (docs/backends.md, archives).
    layer_length = int.from_bytes(LAYER[-4:], "little")
    digests = set(written_manifest.repo_digests([tag], written_manifest.written_digest(config, [layer_length])))
    return {"id": "sha256:" + cid, "tags": {tag}, "digests": digests, "size": len(config) + len(LAYER), "user": "archive"}


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
        // never called again (docs/backends.md, "How backends are contained").
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


# --- 4. hostile input ------------------------------------------------------------------


def _pb_bytes(field, data):
    """One length-delimited protobuf field."""
    n, varint = len(data), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        varint += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([field << 3 | 2]) + varint + data


def image_status_request(ref_bytes):
    return _pb_bytes(1, _pb_bytes(1, ref_bytes))  # ImageStatusRequest{image: ImageSpec{image}}


def list_images_request(ref_bytes):
    return _pb_bytes(1, _pb_bytes(1, _pb_bytes(1, ref_bytes)))  # ListImagesRequest{filter{image{image}}}


HEX = "0123456789abcdef"


def hostile_references(count, seed=8):
    """`count` references no client should send, as bytes (some not UTF-8):
    random bytes, huge strings, control characters, unicode, path traversal,
    `sha256:` with wrong lengths, thousands of `/` components, and more."""
    rng = random.Random(seed)
    fixed = [
        "", " ", "\x00", "busybox\x00", "busybox\nlevel=error msg=forged", "\x1b[31mred\x1b[0m", "a\rb", "\t",
        "../../etc/passwd", "/etc/passwd", "..", ".", "./busybox", "busybox/../../../etc/shadow", "%2e%2e%2fetc",
        "file:///etc/passwd", "..\\..\\windows\\system32", "sha256:../../../etc/passwd", "busybox@sha256:../../x",
        "ｂｕｓｙｂｏｘ", "busybox\u202e", "busy\u200bbox", "İstanbul", "ß", "busybox:\U0001F600", "e\u0301", "\ufeffbusybox",
        "sha256:", "sha256", "SHA256:" + "a" * 64, "sha256:" + "g" * 64, "sha256:" + "A" * 64, "sha512:" + "a" * 64,
        "sha256:" + "a" * 64 + ":", "sha256:" + "a" * 64 + "@", "sha256:" + "a" * 64 + "/x", "busybox@sha256:" + "a" * 63,
        "busybox@sha256:" + "a" * 65, "busybox@md5:" + "a" * 32, "busybox:" + "a" * 200, "busybox:-x", "busybox::1",
        "localhost:99999999999999999999/x", "[::1]:5000/x", "[::1/x", "a" * 256, "a" * 255 + "/b", "-busybox", "busybox-",
        "UPPER/case", "@", ":", "/", "//", "a//b", "a/", "/a", "a:", "a@", "@sha256:" + "a" * 64,
    ]
    shapes = [
        lambda k: "a/" * k + "a", lambda k: "/" * k, lambda k: "a" + "/" * k + "b", lambda k: "a." * k + "a",
        lambda k: "a_" * k + "!", lambda k: "a-" * k + "/b!", lambda k: "a" * k, lambda k: "sha256:" + "a" * k,
        lambda k: "busybox:" + "1" * k, lambda k: "x@sha256:" + "b" * k, lambda k: "\x00" * k, lambda k: "é" * k,
    ]
    refs = [s.encode() for s in fixed]
    for shape in shapes:  # huge strings: the biggest still fit in one 4 MiB request
        for k in (1000, 5000, 100_000, 1_800_000):
            data = shape(k).encode()
            refs.append(data[: (4 << 20) - 64])
    for k in range(0, 140):  # every wrong length of a sha256 (and its prefix forms)
        refs.append(("sha256:" + "".join(rng.choice(HEX) for _ in range(k))).encode())
    alphabet = "abcz09._-/:@ABZ \x00\x7f\u00e9\u202e%\\"
    while len(refs) < count:
        kind = rng.randrange(5)
        n = rng.choice((1, 3, 7, 64, 200, 1000))
        if kind == 0:
            refs.append(bytes(rng.randrange(256) for _ in range(n)))  # random bytes, often not UTF-8
        elif kind == 1:
            refs.append("".join(rng.choice(alphabet) for _ in range(n)).encode())
        elif kind == 2:
            refs.append("/".join("".join(rng.choice("ab.-_") for _ in range(rng.randrange(1, 4))) for _ in range(n)).encode())
        elif kind == 3:
            refs.append("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(n)).encode("utf-8", "surrogatepass"))
        else:
            refs.append(("sha256:" + "".join(rng.choice(HEX + "x") for _ in range(rng.randrange(60, 70)))).encode())
    return refs[:count] if count >= len(fixed) else refs[:count]


def scenario_hostile_references(workdir, count=10_000, concurrency=8, oversize=20):
    """Every reference through ImageStatus and the ListImages filter: each
    answer is OK (with the image unset, or an image it really names) or
    INVALID_ARGUMENT quoting the input; nothing crashes or slows the server
    (a client asking good questions all along is timed)."""
    report = Report("hostile references")
    server = Server(workdir, oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    try:
        refs = hostile_references(count)
        codes = {}
        bad = []
        slowest = [0.0, b""]
        lock = threading.Lock()
        big = channel(server.socket, **{"grpc.max_send_message_length": 8 << 20})
        status = big.unary_unary("/runtime.v1.ImageService/ImageStatus", request_serializer=bytes, response_deserializer=bytes)
        listing = big.unary_unary("/runtime.v1.ImageService/ListImages", request_serializer=bytes, response_deserializer=bytes)

        def good_questions(stop, latencies, failures):
            stub = cri_stubs.load()[1].ImageServiceStub(channel(server.socket))
            pb = cri_stubs.load()[0]
            while not stop.is_set():
                t = time.monotonic()
                try:
                    _expect(image_status(stub, pb, 10, "edge-tools:2.0") is not None, "edge-tools:2.0 not found")
                    latencies.append(time.monotonic() - t)
                except (grpc.RpcError, AssertionError) as e:
                    failures.append(str(e)[:200])
                time.sleep(0.005)

        baseline, base_failures = [], []
        stop = threading.Event()
        t = threading.Thread(target=good_questions, args=(stop, baseline, base_failures), daemon=True)
        t.start()
        time.sleep(1.0)
        stop.set()
        t.join()

        def ask(chunk, oversize=0):
            for _ in range(oversize):  # over the 4 MiB receive limit: refused, the rest goes on
                try:
                    status(image_status_request(b"a" * (5 << 20)), timeout=60)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    codes[f"over 4 MiB: {code}"] = codes.get(f"over 4 MiB: {code}", 0) + 1
            for ref in chunk:
                for name, call, request in (("ImageStatus", status, image_status_request(ref)),
                                            ("ListImages", listing, list_images_request(ref))):
                    t0 = time.monotonic()
                    try:
                        call(request, timeout=60)
                        code, details = "OK", ""
                    except grpc.RpcError as e:
                        code, details = e.code().name, e.details() or ""
                    elapsed = time.monotonic() - t0
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
                        if elapsed > slowest[0]:
                            slowest[:] = [elapsed, ref[:40]]
                        if code == "INVALID_ARGUMENT":
                            problem = _quotes_input(details, ref)
                            if problem:
                                bad.append(f"{name} {ref[:60]!r}: {problem}")
                        elif code != "OK":
                            bad.append(f"{name} {ref[:60]!r}: {code} {details[:200]}")

        during, failures = [], []
        stop = threading.Event()
        canary = threading.Thread(target=good_questions, args=(stop, during, failures), daemon=True)
        canary.start()
        started = time.monotonic()
        workers = [threading.Thread(target=ask, args=(refs[i::concurrency], oversize if i == 0 else 0)) for i in range(concurrency)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - started
        stop.set()
        canary.join()
        big.close()
        report.figures.update({
            "references": len(refs), "calls": sum(codes.values()), "seconds": round(elapsed, 1),
            "OK": codes.get("OK", 0), "INVALID_ARGUMENT": codes.get("INVALID_ARGUMENT", 0),
            "other codes": sum(v for k, v in codes.items() if k not in ("OK", "INVALID_ARGUMENT") and not k.startswith("over")),
            "requests over 4 MiB": oversize,
            "over 4 MiB answered RESOURCE_EXHAUSTED": codes.get("over 4 MiB: RESOURCE_EXHAUSTED", 0),
            "largest reference bytes": max(len(r) for r in refs),
            "slowest call ms": ms(slowest[0]), "slowest call's reference starts": repr(slowest[1])[:50],
            "good client calls before": len(baseline), "good client p99 ms before": ms(pct(baseline, 99)),
            "good client calls during": len(during), "good client p99 ms during": ms(pct(during, 99)),
            "good client max ms during": ms(max(during, default=None)), "good client failures": len(failures) + len(base_failures),
        })
        for b in bad[:20]:
            report.problem(b)
        if codes.get("over 4 MiB: RESOURCE_EXHAUSTED", 0) != oversize:
            report.problem(f"requests over 4 MiB: {({k: v for k, v in codes.items() if k.startswith('over')})}")
        for f in failures[:5]:
            report.problem(f"good client: {f}")
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
        if "internal error" in server.log():
            report.problem("the log has an internal error")
        report.slowest = slowest[0]
    finally:
        server.stop()
    return report


def _quotes_input(details, ref):
    """None when an INVALID_ARGUMENT message names the input (its start, JSON-quoted) and stays short."""
    if len(details) > 2048:  # 200 characters of input, each escaped to at most 6, and the reason
        return f"message of {len(details)} characters"
    try:
        text = ref.decode("utf-8")
    except UnicodeDecodeError:
        return None  # decoded with replacement characters: nothing exact to look for
    start = json.dumps(text[:20], ensure_ascii=False)[1:-1]
    # JSON.stringify leaves U+2028/2029 and lone surrogates as they are; Python escapes some: compare what both agree on.
    start = start.split("\\u")[0]
    return None if start in details else f"message {details[:120]!r} does not quote the input"


def scenario_hostile_payloads(workdir, count=2000, seed=9):
    """Random and truncated protobuf payloads to every unary method: OK or
    INVALID_ARGUMENT, never anything else, and the server stays up."""
    report = Report("hostile payloads")
    server = Server(workdir, oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    try:
        rng = random.Random(seed)
        ch = channel(server.socket)
        methods = ["ImageStatus", "ListImages", "ImageFsInfo", "PullImage", "RemoveImage"]
        calls = {m: ch.unary_unary(f"/runtime.v1.ImageService/{m}", request_serializer=bytes, response_deserializer=bytes) for m in methods}
        stream = ch.unary_stream("/runtime.v1.ImageService/StreamImages", request_serializer=bytes, response_deserializer=bytes)
        valid = [image_status_request(b"edge-tools:2.0"), list_images_request(b"example.com/edge/hello"),
                 image_status_request(b"sha256:" + b"a" * 64) + b"\x10\x01"]
        codes = {}
        # A payload that decodes to a reference: absent (NOT_FOUND) for PullImage; on this
        # read-only store RemoveImage of an image it names (an ID prefix) is refused.
        expected = {"PullImage": "NOT_FOUND", "RemoveImage": "FAILED_PRECONDITION"}
        for i in range(count):
            kind = i % 4
            if kind == 0:
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
            elif kind == 1:
                v = rng.choice(valid)
                payload = v[: rng.randrange(len(v))]  # truncated
            elif kind == 2:
                v = bytearray(rng.choice(valid))
                for _ in range(rng.randrange(1, 4)):
                    v[rng.randrange(len(v))] = rng.randrange(256)  # flipped bytes
                payload = bytes(v)
            else:  # unknown fields, deep nesting, huge declared lengths
                payload = rng.choice([
                    b"\x0a" * 2000, b"\x0a\xff\xff\xff\xff\x0f", b"\xfa\xff\xff\xff\x0f\x00", b"\x08" + b"\xff" * 10,
                    b"\x0b" * 50, b"\x0c", b"\x0a\x00" * 1000, _pb_bytes(15, os.urandom(100)),
                ])
            method = methods[i % len(methods)]
            for name in (method, "StreamImages") if i % 5 == 0 else (method,):
                try:
                    if name == "StreamImages":
                        list(stream(payload, timeout=10))
                    else:
                        calls[name](payload, timeout=10)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                    details = e.details() or ""
                codes[code] = codes.get(code, 0) + 1
                allowed = {"OK", "INVALID_ARGUMENT", expected.get(name, "INVALID_ARGUMENT")}
                if code not in allowed:
                    report.problem(f"{name} {payload[:40]!r}: {code} {details[:200]}")
        ch.close()
        report.figures.update({"payloads": count, "calls": sum(codes.values()), **{f"answered {k}": v for k, v in sorted(codes.items())}})
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
        if len(server.list_images()) != 2:
            report.problem("the sample images are no longer served")
    finally:
        server.stop()
    return report


# --- raw HTTP/2, for what grpcio will not send -------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(n, prefix_bits=7, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = [first | limit]
    n -= limit
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def hpack(headers):
    """Literal header fields without indexing, no Huffman: the plainest HPACK."""
    out = b""
    for name, value in headers:
        out += b"\x00" + _hpack_int(len(name)) + name.encode() + _hpack_int(len(value)) + value.encode()
    return out


def grpc_headers(method, authority="localhost"):
    return hpack([(":method", "POST"), (":scheme", "http"), (":path", f"/runtime.v1.ImageService/{method}"),
                  (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")])


def grpc_message(payload, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(payload)) + payload


def raw_call(method, payload, stream=1, authority="localhost"):
    """The frames of one complete gRPC call after the preface."""
    return (frame(HEADERS, END_HEADERS, stream, grpc_headers(method, authority))
            + frame(DATA, END_STREAM, stream, grpc_message(payload)))


def raw_connect(sock_path, timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    return s


def read_frames(s, until=None, timeout=5):
    """Reads frames until the connection closes, `until(kind, flags, stream, payload)` is true, or the timeout."""
    frames, buf = [], b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return frames, True
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + length])
            buf = buf[9 + length:]
            frames.append(f)
            if until and until(*f):
                return frames, False
    return frames, False


def _grpc_status_in(frames):
    """Whether a call ended with trailers (a HEADERS frame with END_STREAM)."""
    return any(k == HEADERS and f & END_STREAM for k, f, _, _ in frames)


def garbage_connections(rng):
    """(name, bytes to send) for each way to speak broken HTTP/2 or gRPC."""
    status = image_status_request(b"edge-tools:2.0")
    settings = frame(SETTINGS, 0, 0)
    hello = PREFACE + settings
    headers = frame(HEADERS, END_HEADERS, 1, grpc_headers("ImageStatus"))
    return [
        ("random bytes instead of the preface", bytes(rng.randrange(256) for _ in range(4096))),
        ("an HTTP/1.1 request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("preface, then random bytes", PREFACE + bytes(rng.randrange(256) for _ in range(4096))),
        ("frames of random types and payloads", hello + b"".join(
            frame(rng.randrange(256), rng.randrange(256), rng.randrange(8), bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
            for _ in range(200))),
        ("HEADERS with a garbage HPACK block", hello + frame(HEADERS, END_HEADERS | END_STREAM, 1, bytes(rng.randrange(256) for _ in range(200)))),
        ("HPACK index out of range", hello + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff\x0f")),
        ("HPACK string length beyond the frame", hello + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x00\x7f\xff\xff\xff\x0f" + b"a")),
        ("HEADERS on stream 0", hello + frame(HEADERS, END_HEADERS | END_STREAM, 0, grpc_headers("ImageStatus"))),
        ("HEADERS on an even stream", hello + frame(HEADERS, END_HEADERS | END_STREAM, 2, grpc_headers("ImageStatus"))),
        ("gRPC length prefix longer than the data", hello + headers + frame(DATA, END_STREAM, 1, b"\x00\x00\x10\x00\x00" + status)),
        ("gRPC message cut in its prefix", hello + headers + frame(DATA, END_STREAM, 1, b"\x00\x00\x00")),
        ("compressed flag without grpc-encoding", hello + headers + frame(DATA, END_STREAM, 1, grpc_message(status, compressed=True))),
        ("two gRPC messages on a unary call", hello + headers + frame(DATA, END_STREAM, 1, grpc_message(status) * 2)),
        ("DATA before HEADERS", hello + frame(DATA, END_STREAM, 1, grpc_message(status))),
        ("DATA frame longer than SETTINGS_MAX_FRAME_SIZE", hello + headers + struct.pack(">I", 1 << 20)[1:] + bytes([DATA, 0]) + struct.pack(">I", 1) + b"\x00" * 4096),
        ("a path to no method", hello + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack([(":method", "POST"), (":scheme", "http"), (":path", "/../../etc/passwd"), (":authority", "x"), ("content-type", "application/grpc")]))),
        ("no :path", hello + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack([(":method", "POST"), (":scheme", "http"), ("content-type", "application/grpc")]))),
        ("a GET with a body", hello + frame(HEADERS, END_HEADERS, 1, hpack([(":method", "GET"), (":scheme", "http"), (":path", "/runtime.v1.ImageService/ImageStatus"), (":authority", "x")])) + frame(DATA, END_STREAM, 1, grpc_message(status))),
        ("an :authority of 10 KiB of control characters", hello + frame(HEADERS, END_HEADERS, 1, grpc_headers("ImageStatus", authority="\x01\x7f" * 5000)) + frame(DATA, END_STREAM, 1, grpc_message(status))),
        ("SETTINGS with invalid values", PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 31) + struct.pack(">HI", 5, 100) + struct.pack(">HI", 2, 7))),
        ("SETTINGS of the wrong length", PREFACE + frame(SETTINGS, 0, 0, b"\x00\x04\x00")),
        ("WINDOW_UPDATE of 0 and one that overflows", hello + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF))),
        ("PUSH_PROMISE from a client", hello + frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + grpc_headers("ImageStatus"))),
        ("HEADERS, then CONTINUATION frames without end (2 MiB)", hello + frame(HEADERS, 0, 1, grpc_headers("ImageStatus")) + b"".join(frame(CONTINUATION, 0, 1, hpack([("x-pad", "p" * 16000)])) for _ in range(128))),
        ("HEADERS without END_HEADERS, then DATA", hello + frame(HEADERS, 0, 1, grpc_headers("ImageStatus")) + frame(DATA, END_STREAM, 1, grpc_message(status))),
        ("1000 PINGs", hello + b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(1000))),
        ("2000 streams opened and reset at once", hello + b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, grpc_headers("ListImages")) + frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", 8)) for i in range(2000))),
        ("2000 streams opened and left open", hello + b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, grpc_headers("ListImages")) for i in range(2000))),
        ("GOAWAY, then a call", hello + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)) + raw_call("ImageStatus", status, 1)),
    ]


def scenario_garbage_frames(workdir, seed=10, wait=3.0):
    """Raw connections speaking broken HTTP/2 and gRPC, each on its own
    connection, with a client asking good questions all along: the server
    answers each with an error or closes it, and stays up."""
    report = Report("garbage frames")
    server = Server(workdir, oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample"))
    try:
        # First, that this raw client speaks well enough to be answered.
        s = raw_connect(server.socket)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + raw_call("ImageStatus", image_status_request(b"edge-tools:2.0")))
        frames, _ = read_frames(s, until=lambda k, f, st, p: k == HEADERS and f & END_STREAM)
        s.close()
        if not (_grpc_status_in(frames) and any(k == DATA and st == 1 for k, _, st, _ in frames)):
            report.problem(f"a well-formed raw call got no answer: {[(k, f, st) for k, f, st, _ in frames]}")
        rng = random.Random(seed)
        stop = threading.Event()
        latencies, failures = [], []

        def good_client():
            pb, pbg = cri_stubs.load()
            stub = pbg.ImageServiceStub(channel(server.socket))
            while not stop.is_set():
                t = time.monotonic()
                try:
                    _expect(image_status(stub, pb, 10, "edge-tools:2.0") is not None, "not found")
                    latencies.append(time.monotonic() - t)
                except (grpc.RpcError, AssertionError) as e:
                    failures.append(str(e)[:200])
                time.sleep(0.01)

        t = threading.Thread(target=good_client, daemon=True)
        t.start()
        outcomes = {}
        for name, data in garbage_connections(rng):
            s = raw_connect(server.socket)
            try:
                s.sendall(data)
            except OSError:
                pass  # the server may close on the first bad bytes, before we finish writing
            frames, closed = read_frames(s, timeout=wait)
            s.close()
            goaway = any(k == GOAWAY for k, _, _, _ in frames)
            rst = any(k == RST_STREAM for k, _, _, _ in frames)
            answered = _grpc_status_in(frames)
            outcomes[name] = "closed" if closed else "GOAWAY" if goaway else "stream reset" if rst else "answered" if answered else f"open after {wait:g} s"
            if server.proc.poll() is not None:
                report.problem(f"imagelet exited after {name}: {server.log()[-2000:]}")
                break
        stop.set()
        t.join()
        report.figures.update({"connections": len(outcomes), "good client calls": len(latencies),
                               "good client failures": len(failures), "good client max ms": ms(max(latencies, default=None))})
        report.outcomes = outcomes
        for name, outcome in outcomes.items():
            report.figures[f"{name}"] = outcome
        for f in failures[:5]:
            report.problem(f"good client: {f}")
        if server.proc.poll() is None and len(server.list_images()) != 2:
            report.problem("the sample images are no longer served")
        if "internal error" in server.log():
            report.problem("the log has an internal error")
    finally:
        server.stop()
    return report


# --- connections that do nothing, or too little ----------------------------------------------


def _eof_from_server(s):
    """Whether the server has closed a connection that sends nothing (reading it changes nothing)."""
    s.setblocking(False)
    try:
        while True:
            if not s.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _closed_by_server(s):
    """Whether the server has closed a connection we must not read from: a
    write to it fails once the server's end is gone."""
    try:
        s.setblocking(False)
        s.send(frame(PING, 0, 0, b"probe..."))
        return False
    except BlockingIOError:
        return False  # our own send buffer is full: the server is not reading either, but is there
    except OSError:
        return True


class IdleClients:
    """HTTP/2 connections that complete the handshake and then make no call,
    but answer what a live client answers (SETTINGS and PING acks), as an idle
    gRPC channel does. `closed` maps each to when the server closed it."""

    def __init__(self, sock_path, count):
        import selectors
        self.selector = selectors.DefaultSelector()
        self.started = time.monotonic()
        self.open = 0
        self.closed_after = []
        self.goaway = 0
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ, [b""])
            self.open += 1
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set() and self.open:
            for key, _ in self.selector.select(timeout=0.1):
                s, buf = key.fileobj, key.data
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.selector.unregister(s)
                    s.close()
                    self.open -= 1
                    self.closed_after.append(time.monotonic() - self.started)
                    continue
                buf[0] += chunk
                while len(buf[0]) >= 9 and len(buf[0]) >= 9 + int.from_bytes(buf[0][:3], "big"):
                    n = int.from_bytes(buf[0][:3], "big")
                    kind, flags, payload = buf[0][3], buf[0][4], buf[0][9:9 + n]
                    buf[0] = buf[0][9 + n:]
                    try:
                        if kind == SETTINGS and not flags & ACK:
                            s.send(frame(SETTINGS, ACK, 0))
                        elif kind == PING and not flags & ACK:
                            s.send(frame(PING, ACK, 0, payload))
                        elif kind == GOAWAY:
                            self.goaway += 1
                    except OSError:
                        pass

    def close(self):
        self._stop.set()
        self.thread.join(timeout=10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def never_reading_client(sock_path, method="StreamImages", request=b"", open_window=True, authority="localhost"):
    """A client that asks for a big answer and never reads it. With
    `open_window` it grants the server HTTP/2 flow-control credit for
    everything, so the answer piles up in the socket; without, the server is
    held by flow control."""
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(sock_path)
    settings = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0x7FFFFFFF) if open_window else b"")
    window = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)) if open_window else b""
    s.sendall(PREFACE + settings + window + raw_call(method, request, authority=authority))
    return s


def scenario_connections(workdir, images=3000, idle=1000, timeouts=None, close_within=None):
    """1,000 idle connections, two that never finish the HTTP/2 handshake
    (nothing sent, half a preface), three that never read their answers (one
    filling the socket, one held by flow control, one filling the socket on
    the path-:authority connection path): another client is served
    throughout, and the server closes each after its documented timeout
    (`timeouts`: config keys; `close_within`: how long to watch)."""
    report = Report("connections")
    layout = os.path.join(workdir, "layout")
    write_layout(layout, images)
    config = "".join(f'{k} = "{v}"\n' for k, v in (timeouts or {}).items()) + oci_backend(layout, name="many")
    server = Server(workdir, config)
    conns, idle_clients = [], None
    try:
        pb, pbg = cri_stubs.load()
        stub = pbg.ImageServiceStub(channel(server.socket))
        started = time.monotonic()
        idle_clients = IdleClients(server.socket, idle)
        no_preface = socket.socket(socket.AF_UNIX)
        no_preface.connect(server.socket)
        half_preface = socket.socket(socket.AF_UNIX)
        half_preface.connect(server.socket)
        half_preface.sendall(PREFACE[:10])
        stalled_socket = never_reading_client(server.socket)
        stalled_window = never_reading_client(server.socket, open_window=False)
        # kubelet before v1.30 sends the socket path as :authority: its connection takes the rewriting path.
        stalled_old_kubelet = never_reading_client(server.socket, authority=server.socket)
        conns = [no_preface, half_preface, stalled_socket, stalled_window, stalled_old_kubelet]
        report.figures["connections opened"] = idle + len(conns)
        report.figures["seconds to open them"] = round(time.monotonic() - started, 2)
        watched = {"no preface": no_preface, "half a preface": half_preface,
                   "never reads (socket full)": stalled_socket, "never reads (flow control)": stalled_window,
                   "never reads (socket full, path :authority)": stalled_old_kubelet}
        closed_after = {}
        latencies, failures = [], []
        limit = close_within or 5.0
        rss_peak = 0
        while time.monotonic() - started < limit:
            t = time.monotonic()
            try:
                _expect(len(list_images(stub, pb, 10)) == images, "wrong image count")
                latencies.append(time.monotonic() - t)
            except (grpc.RpcError, AssertionError) as e:
                failures.append(str(e)[:200])
            for name, s in watched.items():
                probe = _closed_by_server if name.startswith("never reads") else _eof_from_server
                if name not in closed_after and probe(s):
                    closed_after[name] = time.monotonic() - started
            rss_peak = max(rss_peak, rss_kib(server.proc.pid))
            if len(closed_after) == len(watched) and idle_clients.open == 0:
                break
            time.sleep(0.05)
        if idle_clients.closed_after and len(idle_clients.closed_after) == idle:
            closed_after["idle"] = max(idle_clients.closed_after)
            report.figures["idle: first closed after s"] = round(min(idle_clients.closed_after), 1)
        report.figures["idle: GOAWAY received"] = idle_clients.goaway
        report.figures.update({"other client calls": len(latencies), "other client failures": len(failures),
                               "other client p99 ms": ms(pct(latencies, 99)), "other client max ms": ms(max(latencies, default=None)),
                               "RSS peak MiB": round(rss_peak / 1024, 1)})
        for name in ["idle", *watched]:
            report.figures[f"{name}: closed after s"] = round(closed_after[name], 1) if name in closed_after else f"open after {limit:g} s"
        report.closed_after = closed_after
        for f in failures[:5]:
            report.problem(f"other client: {f}")
        if close_within is not None:
            for name in ["idle", *watched]:
                if name not in closed_after:
                    report.problem(f"{name}: still open after {close_within} s")
        if server.proc.poll() is not None:
            report.problem(f"imagelet exited {server.proc.returncode}")
    finally:
        if idle_clients:
            idle_clients.close()
        for s in conns:
            s.close()
        server.stop()
    return report


# --- 5. lifecycle ---------------------------------------------------------------------------


def _status_load(ids, images):
    def next_call(rng, stub, pb, timeout):
        i = rng.randrange(images)
        got = image_status(stub, pb, timeout, f"bench.local/edge/app{i}:1.0")
        return "ImageStatus", lambda: _expect(got is not None and got.id == "sha256:" + ids[i], f"app{i} → {got and got.id}")
    return next_call


def scenario_lifecycle(workdir, images=10_001, load_seconds=5.0, concurrency=16, streams=4):
    """SIGTERM during load finishes the calls in flight and removes the
    socket; `kill -9`, then a restart, serves on the same path; a second
    instance on the same socket is refused and the first is not disturbed."""
    report = Report("lifecycle")
    layout = os.path.join(workdir, "layout")
    ids = write_layout(layout, images)
    config = oci_backend(layout, name="lifecycle")
    pb, pbg = cri_stubs.load()

    # A second instance, while the first is under load.
    server = Server(workdir, config)
    try:
        load = Load(server.socket, _status_load(ids, images), concurrency)
        time.sleep(load_seconds / 2)
        second = subprocess.run([BIN, "serve", "--config", server.config], capture_output=True, text=True, timeout=60)
        time.sleep(load_seconds / 2)
        load.stop()
        report.figures["second instance: exit code"] = second.returncode
        report.figures["second instance: says"] = second.stderr.strip()
        report.figures["second instance: first's calls meanwhile"] = load.calls
        report.figures["second instance: first's failed calls"] = len(load.failures)
        if second.returncode != 1 or "another process is listening" not in second.stderr or len(second.stderr.strip().splitlines()) != 1:
            report.problem(f"second instance: exit {second.returncode}, {second.stderr!r}")
        for f in load.failures[:5]:
            report.problem(f"second instance disturbed the first: {f}")
        if not os.path.exists(server.socket) or server.proc.poll() is not None:
            report.problem("second instance: the first lost its socket or exited")

        # SIGTERM with streams half read and unary calls running.
        load = Load(server.socket, _status_load(ids, images), concurrency, pause_after_failure=0.05)
        ch = channel(server.socket)
        stub = pbg.ImageServiceStub(ch)
        open_streams = [stub.StreamImages(pb.StreamImagesRequest(), timeout=60) for _ in range(streams)]
        firsts = [len(next(s).images) for s in open_streams]  # in flight: the server is answering them
        time.sleep(load_seconds / 2)
        calls_before = load.calls
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        delivered = [first + sum(len(b.images) for b in s) for first, s in zip(firsts, open_streams)]
        code = server.proc.wait(timeout=60)
        exited = time.monotonic() - t0
        load.stop()
        ch.close()
        unary_failures = [f for f in load.failures if f[2] != "UNAVAILABLE"]
        report.figures.update({
            "SIGTERM: streams in flight": streams, "SIGTERM: images each stream delivered": sorted(set(delivered)),
            "SIGTERM: unary calls before": calls_before, "SIGTERM: unary calls refused after (UNAVAILABLE)": len(load.failures) - len(unary_failures),
            "SIGTERM: exit code": code, "SIGTERM: exited after ms": ms(exited), "SIGTERM: socket left": os.path.exists(server.socket),
        })
        if any(d != images for d in delivered):
            report.problem(f"SIGTERM cut streams in flight: {delivered} of {images}")
        for f in unary_failures[:5]:
            report.problem(f"SIGTERM: a call failed other than UNAVAILABLE: {f}")
        for w in load.wrong[:5]:
            report.problem(f"SIGTERM: wrong answer {w}")
        if code != 0 or os.path.exists(server.socket):
            report.problem(f"SIGTERM: exit code {code}, socket left: {os.path.exists(server.socket)}")
    finally:
        server.stop()

    # kill -9 under load, then a restart on the same socket path.
    shutil.copy(server.log_path, server.log_path + ".sigterm")
    server = Server(workdir, config)
    try:
        load = Load(server.socket, _status_load(ids, images), concurrency, pause_after_failure=0.05)
        time.sleep(load_seconds / 2)
        server.proc.kill()
        server.proc.wait()
        killed = time.monotonic()
        report.figures["kill -9: socket file left behind"] = os.path.exists(server.socket)
        server.stop()
        server = Server(workdir, config)
        serving = time.monotonic() - killed
        fresh = wait_until(lambda: len(list_images(pbg.ImageServiceStub(channel(server.socket)), pb, 10)) == images, 30)
        # The load's old channels reconnect by themselves, when their reconnect backoff says so.
        settled = wait_until(lambda: _no_failures_for(load, 1.0), 30, step=0)
        load.stop()
        down = [f for f in load.failures if f[0] >= killed - load.started]
        last = max((f[0] for f in down), default=None)
        report.figures.update({
            "kill -9: restarted and serving after ms": ms(serving),
            "kill -9: a fresh client answered after ms": ms(serving + (fresh or 0)),
            "kill -9: old channels' last failed call after ms": ms(last - (killed - load.started)) if last is not None else None,
            "kill -9: calls failed meanwhile (UNAVAILABLE)": sum(1 for f in down if f[2] == "UNAVAILABLE"),
            "kill -9: calls failed otherwise": sum(1 for f in down if f[2] != "UNAVAILABLE"),
            "kill -9: stale socket removed": "removing stale socket" in server.log(),
        })
        if fresh is None:
            report.problem("kill -9: the restarted server did not answer on the same path")
        if "removing stale socket" not in server.log():
            report.problem("kill -9: the restart did not say it removed the stale socket")
        if settled is None:
            report.problem("kill -9: the load's calls still fail 30 s after the restart")
        for f in [f for f in down if f[2] != "UNAVAILABLE"][:5]:
            report.problem(f"kill -9: a call failed other than UNAVAILABLE: {f}")
    finally:
        server.stop()
    return report


def _no_failures_for(load, seconds):
    before_calls, before_failures = load.calls, len(load.failures)
    time.sleep(seconds)
    return load.calls > before_calls and len(load.failures) == before_failures


