"""The repo digests the CRI must report for an image a store keeps without a
servable manifest (docker-archive tarballs, containers/storage, Docker's
classic store), worked out from docs/mirror.md ("Manifests imagelet writes")
and the store's own files, sharing no code with imagelet:

  the manifest is {"schemaVersion":2,"mediaType":<OCI manifest>,
  "config":{<OCI config>, config digest, config length},
  "layers":[{<OCI uncompressed layer>, diff_id, uncompressed tar length}...]}
  serialized without white space; the repo digests are
  <repository>@sha256(manifest) for every repository the image is named in.
"""
import base64
import gzip
import hashlib
import json
import os
import re
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def written_digest(config, layer_sizes):
    """config: the stored bytes; layer_sizes: the uncompressed tar length per diff_id, in the config's order."""
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert len(diff_ids) == len(layer_sizes)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": d, "size": n} for d, n in zip(diff_ids, layer_sizes)],
    }
    return sha256(json.dumps(document, separators=(",", ":")).encode())


def repository(name):
    """A normalized name's repository: before its digest, or before a tag's ':' after the last '/'."""
    bare = name.split("@")[0]
    colon = bare.rfind(":")
    return bare[:colon] if colon > bare.rfind("/") else bare


def repo_digests(names, digest):
    return sorted({f"{repository(n)}@{digest}" for n in names})


def docker_archive_digest(tar_path, config_member):
    """The written manifest digest of the docker-archive image whose manifest.json Config is config_member."""
    with tarfile.open(tar_path) as tar:
        items = json.load(tar.extractfile("manifest.json"))
        item = next(i for i in items if i["Config"] == config_member)
        config = tar.extractfile(item["Config"]).read()
        sizes = []
        for layer in item["Layers"]:
            data = tar.extractfile(layer).read()
            sizes.append(len(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data))
    return written_digest(config, sizes)


def docker_archive_digests(tar_path):
    """{image ID: written manifest digest} for every image of a docker-archive."""
    with tarfile.open(tar_path) as tar:
        items = json.load(tar.extractfile("manifest.json"))
        configs = {i["Config"]: sha256(tar.extractfile(i["Config"]).read()) for i in items}
    return {image_id: docker_archive_digest(tar_path, member) for member, image_id in configs.items()}


def _big_data_file(key):
    # c/storage's makeBigDataBaseName: a key with other characters is "=" + base64.
    return key if re.fullmatch(r"[a-z0-9.]*", key) else "=" + base64.b64encode(key.encode()).decode()


def cstorage_digest(root, driver, image_id):
    """The written manifest digest of a containers/storage image: its stored config, each layer's diff-size."""
    with open(os.path.join(root, f"{driver}-images", "images.json")) as f:
        image = next(i for i in json.load(f) if i["id"] == image_id)
    images_dir = os.path.join(root, f"{driver}-images", image_id)
    with open(os.path.join(images_dir, _big_data_file("manifest")), "rb") as f:
        config_digest = json.load(f)["config"]["digest"]
    with open(os.path.join(images_dir, _big_data_file(config_digest)), "rb") as f:
        config = f.read()
    with open(os.path.join(root, f"{driver}-layers", "layers.json")) as f:
        layers = {l["id"]: l for l in json.load(f)}
    chain, layer = [], image["layer"]
    while layer:
        chain.append(layers[layer])
        layer = layers[layer].get("parent")
    return written_digest(config, [l["diff-size"] for l in reversed(chain)])


def _tar_split_length(path):
    """The tar a tar-split describes: its raw segments' bytes plus each file entry's size."""
    n = 0
    with gzip.open(path, "rt") as f:
        for line in f:
            entry = json.loads(line)
            if entry["type"] == 2:
                n += len(base64.b64decode(entry.get("payload") or ""))
            else:
                n += entry.get("size", 0)
    return n


def docker_digest(driver_dir, image_id):
    """The written manifest digest of a Docker classic-store image: its imagedb config, each layer's tar-split length."""
    with open(os.path.join(driver_dir, "imagedb", "content", "sha256", image_id.split(":")[1]), "rb") as f:
        config = f.read()
    sizes, chain = [], None
    for diff_id in json.loads(config)["rootfs"]["diff_ids"]:
        chain = diff_id if chain is None else sha256(f"{chain} {diff_id}".encode())
        sizes.append(_tar_split_length(os.path.join(driver_dir, "layerdb", "sha256", chain.split(":")[1], "tar-split.json.gz")))
    return written_digest(config, sizes)
