"""Synthetic stores of many small images, for tests and scripts/bench."""
import hashlib
import json
import os


def write_layout(path, n):
    """An OCI layout of n images sharing one small layer; configs differ by a label."""
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return d

    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layer = b"\x1f\x8b" + os.urandom(300)  # contents do not matter: layers are never read
    layer_digest = put(layer)
    manifests = []
    for i in range(n):
        config = json.dumps({
            "created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
            "config": {"User": str(1000 + i % 7), "Labels": {"bench.index": str(i)}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        }).encode()
        cid = put(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cid, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer_digest, "size": len(layer)}],
        }).encode()
        manifests.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + put(manifest),
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": f"bench.local/edge/app{i}:1.0"},
            "_id": cid,
        })
    ids = [m.pop("_id") for m in manifests]
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": manifests}, f)
    return ids
