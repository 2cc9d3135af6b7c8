"""imagelet benchmark for the archives backend (issue: built-in backends).

Generates a directory of 1,000 small image tarballs (half docker-archive, half
oci-archive, each with its own config and a small layer, written directly
with Python's tarfile), starts the compiled binary with one archives backend
on it, and measures through the unix socket with Debian's python3-grpcio:
  - first answer: process start -> first answered ListImages (and how many
    images it listed);
  - all listed: process start -> first ListImages that lists every tarball's image;
  - added tarball: one more tarball renamed into the directory -> first
    ListImages that lists it (watch + incremental rescan);
  - an unchanged rescan: ListImages p50 after the directory settled.

  IMAGELET_BIN=dist/imagelet python3 scripts/bench_archives.py [--tarballs N]
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "integration"))
import cri_stubs  # noqa: E402
from bench_common import wait_for_list  # noqa: E402
import grpc  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _config(i):
    return json.dumps({
        "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
        "config": {"User": str(1000 + i % 7), "Labels": {"bench.index": str(i)}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    }).encode()


def write_docker_archive(path, i, layer):
    config = _config(i)
    cid = hashlib.sha256(config).hexdigest()
    layer_name = hashlib.sha256(layer).hexdigest() + ".tar"
    manifest = json.dumps([{"Config": cid + ".json", "RepoTags": [f"bench.local/edge/app{i}:1.0"], "Layers": [layer_name]}]).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, layer_name, layer)
        _add(tar, cid + ".json", config)
        _add(tar, "manifest.json", manifest)
    return "sha256:" + cid


def write_oci_archive(path, i, layer):
    blobs = {}

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d

    config = _config(i)
    cid = put(config)
    lid = put(layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cid, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + lid, "size": len(layer)}],
    }).encode()
    mid = put(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mid, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": f"bench.local/edge/app{i}:1.0"},
    }]}).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for d, data in blobs.items():
            _add(tar, f"blobs/sha256/{d}", data)
        _add(tar, "index.json", index)
    return "sha256:" + cid


def write_tarball(directory, i):
    layer = b"\x1f\x8b" + os.urandom(300)  # contents do not matter: layers are never read
    path = os.path.join(directory, f"app{i:05d}.tar")
    return (write_docker_archive if i % 2 == 0 else write_oci_archive)(path, i, layer)


def _list(pb, pbg, sock, timeout=10):
    """One ListImages on a fresh channel: a C-core channel whose first connect
    failed waits out its reconnect backoff, which would be measured as start-up."""
    channel = grpc.insecure_channel(f"unix:{sock}")
    try:
        return pbg.ImageServiceStub(channel).ListImages(pb.ListImagesRequest(), timeout=timeout).images
    finally:
        channel.close()


def bench_archives(bin_path, work_dir, tarballs=1000):
    """Runs the benchmark in work_dir (created if needed); returns the figures in ms."""
    pb, pbg = cri_stubs.load()
    store = os.path.join(work_dir, "archives")
    os.makedirs(store, exist_ok=True)
    t = time.perf_counter()
    for i in range(tarballs):
        write_tarball(store, i)
    generate_s = time.perf_counter() - t
    sock = os.path.join(work_dir, "imagelet.sock")
    cfg = os.path.join(work_dir, "imagelet.toml")
    with open(cfg, "w") as f:
        f.write(f'socket = "{sock}"\nlog_level = "warn"\n[[backend]]\ntype = "archives"\npath = "{store}"\n')
    log_path = os.path.join(work_dir, "imagelet.log")
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([bin_path, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        channel, _, first_ms = wait_for_list(pb, pbg, sock, proc, log_path, start, want=tarballs, limit_s=60)
        channel.close()
        all_ms = (time.perf_counter() - start) * 1000
        # One more tarball, written aside and renamed in (how a careful copy lands).
        staging = os.path.join(work_dir, "staging")
        os.makedirs(staging, exist_ok=True)
        new_id = write_tarball(staging, tarballs)
        t = time.perf_counter()
        os.rename(os.path.join(staging, f"app{tarballs:05d}.tar"), os.path.join(store, f"app{tarballs:05d}.tar"))
        while True:
            if time.perf_counter() - t > 30:
                raise RuntimeError("the added tarball did not become visible within 30 s")
            if any(i.id == new_id for i in _list(pb, pbg, sock)):
                added_ms = (time.perf_counter() - t) * 1000
                break
            time.sleep(0.002)

        channel = grpc.insecure_channel(f"unix:{sock}")
        stub = pbg.ImageServiceStub(channel)
        samples = []
        for _ in range(30):
            s = time.perf_counter()
            stub.ListImages(pb.ListImagesRequest(), timeout=10)
            samples.append((time.perf_counter() - s) * 1000)
        channel.close()
        return {
            "tarballs": tarballs,
            "generate_s": round(generate_s, 2),
            "first_answer_ms": round(first_ms, 1),
            "all_listed_ms": round(all_ms, 1),
            "added_visible_ms": round(added_ms, 1),
            "list_p50_ms": round(statistics.median(samples), 2),
        }
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tarballs", type=int, default=1000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="imagelet-bench-archives-")
    try:
        r = bench_archives(BIN, work, args.tarballs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"archives backend, {r['tarballs']} tarballs (generated in {r['generate_s']} s), nproc {os.cpu_count()}, {time.strftime('%Y-%m-%d')}")
    print(f"process start -> first answered ListImages: {r['first_answer_ms']} ms")
    print(f"process start -> ListImages lists all {r['tarballs']}: {r['all_listed_ms']} ms")
    print(f"added tarball -> visible in ListImages: {r['added_visible_ms']} ms")
    print(f"ListImages p50 once settled: {r['list_p50_ms']} ms")
