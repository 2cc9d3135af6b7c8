"""Benchmark of the containers-storage backend (acceptance: time to first
answer with a c/storage store of 10,000 images).

Generates a synthetic but format-faithful containers/storage store (overlay
driver directory names; images.json, layers.json, and per image the big-data
files c/image writes: config under its digest, `manifest`,
`manifest-<digest>`, an empty `signature-<hex>`; layer IDs chained as
sha256(parent + "+" + diffID)), starts the compiled binary on it and measures
through the unix socket with python3-grpcio:
  - process start → first ListImages that lists every image;
  - images.json replaced atomically (one image gains a name) → the name resolves;
  - ListImages p50 afterwards, and the server's RSS.

  scripts/bench_containers_storage.py [--images N]
"""
import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
import cri_stubs  # noqa: E402
from bench_common import backend_scan  # noqa: E402
import grpc  # noqa: E402

ROOT = cri_stubs.ROOT
BIN = os.environ.get("IMAGELET_BIN", os.path.join(ROOT, "dist", "imagelet"))
DRIVER = "overlay"
CREATED = "2024-01-02T03:04:05Z"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def big_data_file_name(key):
    """containers/storage makeBigDataBaseName."""
    if re.fullmatch(r"[a-z0-9.]*", key):
        return key
    return "=" + base64.b64encode(key.encode()).decode()


def layer_record(layer_id, parent, diff_digest, diff_size):
    rec = {
        "id": layer_id, "created": CREATED + "", "compressed-diff-digest": sha256(layer_id.encode()),
        "compressed-size": diff_size // 3, "diff-digest": diff_digest, "diff-size": diff_size,
        "compression": 2, "uidset": [0], "gidset": [0],
    }
    if parent:
        rec["parent"] = parent
    return rec


def write_store(root, n):
    """A c/storage graph root with n images, each one layer on a shared base layer."""
    images_dir = os.path.join(root, f"{DRIVER}-images")
    layers_dir = os.path.join(root, f"{DRIVER}-layers")
    os.makedirs(images_dir)
    os.makedirs(layers_dir)
    base_diff = sha256(b"base layer")
    base_id = base_diff[7:]  # the bottom layer's ID is its diffID's hex
    layers = [layer_record(base_id, None, base_diff, 6144)]
    images = []
    for i in range(n):
        diff = sha256(f"layer {i}".encode())
        layer_id = hashlib.sha256(f"{base_id}+{diff}".encode()).hexdigest()
        layers.append(layer_record(layer_id, base_id, diff, 2048 + i % 512))
        config = json.dumps({
            "created": CREATED, "architecture": "amd64", "os": "linux",
            "config": {"User": str(1000 + i % 7), "Labels": {"bench.index": str(i)}},
            "rootfs": {"type": "layers", "diff_ids": [base_diff, diff]},
        }).encode()
        image_id = hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + image_id, "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(b"gz base"), "size": 2048},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(f"gz {i}".encode()), "size": 700},
            ],
        }).encode()
        mdigest = sha256(manifest)
        items = {
            "sha256:" + image_id: config,
            "manifest-" + mdigest: manifest,
            "manifest": manifest,
            "signature-" + mdigest[7:]: b"",
        }
        os.makedirs(os.path.join(images_dir, image_id))
        for key, data in items.items():
            with open(os.path.join(images_dir, image_id, big_data_file_name(key)), "wb") as f:
                f.write(data)
        images.append({
            "id": image_id, "digest": mdigest,
            "names": [f"bench.local/edge/app{i}:1.0"], "names-history": [f"bench.local/edge/app{i}:1.0"],
            "layer": layer_id, "metadata": json.dumps({"signatures-sizes": {mdigest: []}}),
            "big-data-names": list(items),
            "big-data-sizes": {k: len(v) for k, v in items.items()},
            "big-data-digests": {k: sha256(v) for k, v in items.items()},
            "created": CREATED,
        })
    for name, value in (("images", images), ("layers", layers)):
        d = images_dir if name == "images" else layers_dir
        with open(os.path.join(d, f"{name}.json"), "w") as f:
            json.dump(value, f)
        with open(os.path.join(d, f"{name}.lock"), "wb") as f:
            f.write(b"\0" * 64)
    return images


def replace_atomically(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.rename(tmp, path)


def bench_containers_storage(bin_path, work_dir, n=10_000):
    """Returns the figures (ms unless named otherwise) for a store of n images under work_dir."""
    pb, pbg = cri_stubs.load()
    root = os.path.join(work_dir, "storage")
    t = time.perf_counter()
    images = write_store(root, n)
    generate_ms = (time.perf_counter() - t) * 1000
    changed = "bench.local/edge/changed:1.0"

    def change():
        # One image gains a name, written as c/storage writes images.json.
        images[n // 2]["names"].append(changed)
        replace_atomically(os.path.join(root, f"{DRIVER}-images", "images.json"), images)

    r = backend_scan(pb, pbg, bin_path, work_dir, "containers-storage", root, n, change, changed)
    return {"images": n, "generate_ms": round(generate_ms), **{k: v for k, v in r.items() if k != "images"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagelet-bench-cs-") as work:
        r = bench_containers_storage(BIN, work, args.images)
    print(f"containers-storage, {r['images']} images (store generated in {r['generate_ms']} ms):")
    print(f"  process start to first ListImages listing all: {r['first_answer_ms']} ms")
    print(f"  images.json replaced atomically to visible:     {r['change_visible_ms']} ms")
    print(f"  ListImages p50 afterwards:                      {r['list_p50_ms']} ms")
    print(f"  server RSS:                                     {r['rss_mib']} MiB")


if __name__ == "__main__":
    main()
