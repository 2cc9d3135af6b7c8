"""An OCI image layout reader of the tests' own (shares no code with imagelet):
which blobs index.json reaches, and whether each is there with the bytes its
digest names. Used to check what a removal left behind."""
import hashlib
import json
import os

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}


def blob_path(layout, digest):
    algorithm, encoded = digest.split(":", 1)
    return os.path.join(layout, "blobs", algorithm, encoded)


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        data = f.read()
    algorithm, encoded = digest.split(":", 1)
    assert hashlib.new(algorithm, data).hexdigest() == encoded, f"blob {digest} does not match its digest"
    return data


def index(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)


def reachable(layout, descriptors=None):
    """Every blob the descriptors (default: index.json's) reach; asserts each exists and verifies."""
    seen = set()
    queue = list(index(layout)["manifests"] if descriptors is None else descriptors)
    while queue:
        d = queue.pop()
        if d["digest"] in seen:
            continue
        seen.add(d["digest"])
        data = read_blob(layout, d["digest"])
        if d.get("mediaType") in INDEX_TYPES:
            queue.extend(json.loads(data)["manifests"])
        elif d.get("mediaType") in MANIFEST_TYPES:
            m = json.loads(data)
            queue.append(m["config"])
            queue.extend(m["layers"])
    return seen


def on_disk(layout):
    out = set()
    root = os.path.join(layout, "blobs")
    for algorithm in os.listdir(root):
        out.update(f"{algorithm}:{name}" for name in os.listdir(os.path.join(root, algorithm)))
    return out


def entries_named(layout, predicate):
    """The index.json entries whose ref.name satisfies predicate."""
    return [m for m in index(layout)["manifests"] if predicate(m.get("annotations", {}).get("org.opencontainers.image.ref.name", ""))]
