"""The containers-storage backend through the compiled binary and a C-core
client, next to an oci-layout backend, checked against what podman reported
about the fixture store (test/fixtures/containers-storage/expected.json)."""
import json
import os
import shutil
import time

from conftest import FIXTURES, expected, oci_backend
from written_manifest import cstorage_digest, repo_digests

CS = os.path.join(FIXTURES, "containers-storage")
with open(os.path.join(CS, "expected.json")) as f:
    PODMAN = json.load(f)
INSPECT = {i["Id"]: i for i in PODMAN["inspect"]}
HELLO = next(i for i in PODMAN["images"] if "example.com/edge/hello:1.0" in i["Names"])
UNTAGGED = next(i for i in PODMAN["images"] if not i["Names"])
OCI_HELLO = next(e for e in expected() if e["layout"] == "oci-umoci" and e["ref"] == "1.0")


def cs_backend(path, name="podman", driver=None):
    lines = ["[[backend]]", 'type = "containers-storage"', f'name = "{name}"', f'path = "{path}"']
    if driver:
        lines.append(f'driver = "{driver}"')
    return "\n".join(lines) + "\n"


def by_id(images):
    return {i.id: i for i in images}


def test_list_images_agrees_with_podman(serve):
    s = serve(cs_backend(CS))
    images = by_id(s.list_images())
    assert set(images) == {"sha256:" + i["Id"] for i in PODMAN["images"]}
    for lst in PODMAN["manifestLists"]:
        assert "sha256:" + lst not in images
    for p in PODMAN["images"]:
        image = images["sha256:" + p["Id"]]
        assert sorted(image.repo_tags) == sorted(INSPECT[p["Id"]]["RepoTags"])
        if p["Names"]:
            # Not podman's RepoDigests, whose compressed layers the store no longer has: every
            # repository the image is named in @ the manifest imagelet writes (docs/mirror.md).
            assert list(image.repo_digests) == repo_digests(p["Names"], cstorage_digest(CS, PODMAN["driver"], p["Id"]))
            assert not set(p["RepoDigests"]) & set(image.repo_digests)
        assert image.size == p["Size"]
    hello = images["sha256:" + HELLO["Id"]]
    assert hello.username == "app"
    # CRI-O's ListImages form for an image without names: names-history[0]'s repository @ digest,
    # the written manifest's digest.
    inspect = INSPECT[UNTAGGED["Id"]]
    previous = inspect["NamesHistory"][0]
    assert list(images["sha256:" + UNTAGGED["Id"]].repo_digests) == repo_digests([previous], cstorage_digest(CS, PODMAN["driver"], UNTAGGED["Id"]))


def test_same_image_in_two_stores_is_one_image_with_the_union_of_names(serve):
    # The podman store's hello image was copied from oci-umoci:1.0: same config, same ID.
    assert "sha256:" + HELLO["Id"] == OCI_HELLO["id"]
    s = serve(cs_backend(CS) + oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="oci-umoci"))
    matches = [i for i in s.list_images() if i.id == OCI_HELLO["id"]]
    assert len(matches) == 1
    image = matches[0]
    assert sorted(image.repo_tags) == sorted(
        set(INSPECT[HELLO["Id"]]["RepoTags"]) | {"example.com/edge/hello:1.0", "localhost/oci-umoci:1.0", "localhost/oci-umoci:latest"}
    )
    assert set(repo_digests(HELLO["Names"], cstorage_digest(CS, PODMAN["driver"], HELLO["Id"]))) <= set(image.repo_digests)
    assert f"localhost/oci-umoci@{OCI_HELLO['entryDigest']}" in image.repo_digests
    # The backend configured first gives the size: c/image's rule here.
    assert image.size == HELLO["Size"]
    for ref in ("localhost/hello-alias:mytag", "localhost/oci-umoci:latest", HELLO["Id"][:12]):
        assert s.image_status(ref).image.id == OCI_HELLO["id"]


def test_image_status_verbose_and_annotations(serve):
    s = serve(cs_backend(CS, driver="vfs"))
    r = s.image_status("localhost/hello-alias:mytag", verbose=True)
    info = json.loads(r.info["info"])
    assert info["imageSpec"]["config"]["User"] == "app"
    assert r.image.spec.annotations["org.example.note"] == "manifest-annotation"
    assert r.image.size == HELLO["Size"]


def test_store_change_is_visible_and_bad_store_keeps_last_snapshot(serve, workdir):
    root = os.path.join(workdir, "storage")
    shutil.copytree(CS, root)
    s = serve(cs_backend(root))
    assert len(s.list_images()) == len(PODMAN["images"])
    images_json = os.path.join(root, "vfs-images", "images.json")
    with open(images_json) as f:
        images = json.load(f)
    kept = [i for i in images if i["id"] != HELLO["Id"]]
    tmp = images_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(kept, f)
    os.rename(tmp, images_json)  # as c/storage's AtomicWriteFile does
    deadline = time.time() + 5
    while time.time() < deadline and len(s.list_images()) != len(PODMAN["images"]) - 1:
        time.sleep(0.05)
    assert "sha256:" + HELLO["Id"] not in by_id(s.list_images())
    # Truncated in place (not how c/storage writes): the last good answer stays, the problem is logged.
    with open(images_json, "w") as f:
        f.write('[{"id": "')
    deadline = time.time() + 5
    while time.time() < deadline and images_json not in s.log():
        time.sleep(0.05)
    assert images_json in s.log()
    assert len(s.list_images()) == len(PODMAN["images"]) - 1
