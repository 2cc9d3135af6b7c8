"""Synthetic stores of N small distinct images for every built-in backend kind,
all named bench.local/edge/app<i>:1.0 with the same configs as the OCI layout
of test/integration/synthetic.py, so one call sequence measures each backend
on the same images (scripts/bench_memory.py, scripts/bench's per-backend RSS).

Each writer returns the [[backend]] table that serves what it wrote. The
formats are the ones the backends' fixtures were made with real tools from
(scripts/make-fixtures-*), reduced to what a scan reads."""
import base64
import hashlib
import json
import os

from bench_archives import write_tarball
from bench_containers_storage import write_store as write_containers_storage

CREATED = "2024-01-02T03:04:05Z"
LAYER_DIFF = "sha256:" + hashlib.sha256(b"bench layer").hexdigest()


def config_bytes(i, diff_ids=(LAYER_DIFF,)):
    return json.dumps({
        "created": CREATED, "architecture": "amd64", "os": "linux",
        "config": {"User": str(1000 + i % 7), "Labels": {"bench.index": str(i)}},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }).encode()


def write_oci_layout(root, n):
    from synthetic import write_layout

    write_layout(root, n)
    return f'type = "oci-layout"\npath = "{root}"\n'


def write_archives(root, n):
    os.makedirs(root)
    for i in range(n):
        write_tarball(root, i)
    return f'type = "archives"\npath = "{root}"\n'


def write_cstorage(root, n):
    write_containers_storage(root, n)
    return f'type = "containers-storage"\npath = "{root}"\n'


def write_docker(root, n):
    """Docker's classic store: image/vfs/{repositories.json, imagedb/content, layerdb} (one shared layer)."""
    d = os.path.join(root, "image", "vfs")
    content = os.path.join(d, "imagedb", "content", "sha256")
    os.makedirs(content)
    os.makedirs(os.path.join(d, "imagedb", "metadata", "sha256"))
    layer = os.path.join(d, "layerdb", "sha256", LAYER_DIFF[7:])  # a bottom layer's chain ID is its diff ID
    os.makedirs(layer)
    for name, text in (("diff", LAYER_DIFF), ("size", "2048"), ("cache-id", "0" * 64)):
        with open(os.path.join(layer, name), "w") as f:
            f.write(text)
    repos = {}
    for i in range(n):
        data = config_bytes(i)
        hex_id = hashlib.sha256(data).hexdigest()
        with open(os.path.join(content, hex_id), "wb") as f:
            f.write(data)
        repos[f"bench.local/edge/app{i}"] = {f"bench.local/edge/app{i}:1.0": "sha256:" + hex_id}
    with open(os.path.join(d, "repositories.json"), "w") as f:
        json.dump({"Repositories": repos}, f)
    return f'type = "docker"\npath = "{root}"\n'


def _big_data_name(key):
    import re

    return key if re.fullmatch(r"[a-z0-9.]*", key) else "=" + base64.b64encode(key.encode()).decode()


def write_isulad(root, n):
    """iSulad's OCI image store: storage/vfs-images/<id>/{images.json, manifest, config}, one shared layer."""
    images = os.path.join(root, "storage", "vfs-images")
    layers = os.path.join(root, "storage", "vfs-layers", LAYER_DIFF[7:])
    os.makedirs(images)
    os.makedirs(layers)
    with open(os.path.join(layers, "layer.json"), "w") as f:
        json.dump({"id": LAYER_DIFF[7:], "created": CREATED, "diff-digest": LAYER_DIFF, "diff-size": 2048}, f)
    for i in range(n):
        config = config_bytes(i)
        hex_id = hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + hex_id, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": LAYER_DIFF, "size": 700}],
        }).encode()
        mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        d = os.path.join(images, hex_id)
        os.makedirs(d)
        items = {"sha256:" + hex_id: config, "manifest": manifest}
        for key, data in items.items():
            with open(os.path.join(d, _big_data_name(key)), "wb") as f:
                f.write(data)
        with open(os.path.join(d, "images.json"), "w") as f:
            json.dump({
                "id": hex_id, "digest": mdigest, "names": [f"bench.local/edge/app{i}:1.0"], "layer": LAYER_DIFF[7:],
                "big-data-names": list(items), "big-data-sizes": {k: len(v) for k, v in items.items()},
                "big-data-digests": {k: "sha256:" + hashlib.sha256(v).hexdigest() for k, v in items.items()},
                "created": CREATED, "loaded": CREATED, "size": 2048 + len(config) + len(manifest) - 1,
            }, f)
    return f'type = "isulad"\npath = "{root}"\n'


WRITERS = {
    "oci-layout": write_oci_layout,
    "archives": write_archives,
    "containers-storage": write_cstorage,
    "docker": write_docker,
    "isulad": write_isulad,
}
