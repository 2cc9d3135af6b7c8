"""OCI artifacts (image-spec 1.1) through the compiled binary: two artifacts
with the one empty config are two images, identified by their manifest
digests (as CRI-O does), in a layout and in an oci-archive."""
import json
import os

import pytest

from conftest import FIXTURES, oci_backend, run_cli

EMPTY = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
with open(os.path.join(FIXTURES, "oci-artifacts.expected.json")) as f:
    ARTIFACTS = json.load(f)
LAYOUT = os.path.join(FIXTURES, "oci-artifacts")
ARCHIVE_CONFIG = f'[[backend]]\ntype = "archives"\npath = "{FIXTURES}/archives-artifacts"\n'


def manifest_of(artifact):
    with open(os.path.join(LAYOUT, "blobs", "sha256", artifact["id"][7:]), "rb") as f:
        return json.loads(f.read())


@pytest.fixture(params=["layout", "archive"])
def server(serve, request):
    return serve(oci_backend(LAYOUT, name="artifacts") if request.param == "layout" else ARCHIVE_CONFIG)


def test_the_fixture_is_what_it_claims():
    # Both manifests name the same empty config, the case that made them one image.
    for a in ARTIFACTS:
        m = manifest_of(a)
        assert m["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY, "size": 2}
        assert m["artifactType"] == a["artifactType"]


def test_two_artifacts_with_the_shared_empty_config_are_two_images(server):
    images = {i.id: i for i in server.list_images()}
    assert sorted(images) == sorted(a["id"] for a in ARTIFACTS)
    for a in ARTIFACTS:
        image = images[a["id"]]
        repo = a["ref"].rsplit(":", 1)[0]
        assert list(image.repo_tags) == [a["ref"]]
        assert list(image.repo_digests) == [f"{repo}@{a['id']}"]
        assert image.size == a["size"]


@pytest.mark.parametrize("which", [0, 1])
def test_image_status_finds_an_artifact_by_every_name(server, which):
    a = ARTIFACTS[which]
    repo = a["ref"].rsplit(":", 1)[0]
    for ref in (a["ref"], f"{repo}@{a['id']}", a["id"], a["id"][7:], a["id"][7:19]):
        r = server.image_status(ref)
        assert r.image.id == a["id"], ref
        assert r.image.size == a["size"]
    # kubelet's image volumes (KEP-4639) pull them like images.
    assert server.stub.PullImage(server.pb.PullImageRequest(image=server.pb.ImageSpec(image=a["ref"])), timeout=10).image_ref == a["id"]


def test_verbose_status_carries_the_manifest(server):
    a = ARTIFACTS[1]
    r = server.stub.ImageStatus(server.pb.ImageStatusRequest(image=server.pb.ImageSpec(image=a["ref"]), verbose=True), timeout=10)
    info = json.loads(r.info["info"])
    assert info == {"artifactType": a["artifactType"], "manifest": manifest_of(a)}


def test_images_digests_shows_each_artifact_its_own_digest_and_size(workdir):
    config = os.path.join(workdir, "c.toml")
    with open(config, "w") as f:
        f.write(oci_backend(LAYOUT, name="artifacts"))
    out = run_cli("images", "--digests", "--config", config)
    assert out.returncode == 0, out.stderr
    rows = [l.split() for l in out.stdout.splitlines()[1:]]
    assert len(rows) == 2
    for a in ARTIFACTS:
        repo, tag = a["ref"].rsplit(":", 1)
        row = next(r for r in rows if r[0] == repo)
        assert row[1:] == [tag, a["id"][7:20], a["id"][7:20], f"{a['size']}B"]
