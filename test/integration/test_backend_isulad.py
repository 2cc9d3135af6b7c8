"""The isulad backend through the compiled binary and a C-core client, on the
committed iSulad fixture (scripts/make-fixtures-isulad) and damaged copies of it.
Expected values come from test/fixtures/isulad/expected.json (sha256sum, stat,
skopeo inspect) and from hashing the files here, never from imagelet."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import BIN, FIXTURES, oci_backend, run_cli

ISULAD = os.path.join(FIXTURES, "isulad")
with open(os.path.join(ISULAD, "expected.json")) as f:
    E = json.load(f)
TEST = next(e for e in E["embedded"] if e["manifest"] == "test.manifest")
TOOLS = next(e for e in E["embedded"] if e["manifest"] == "tools.manifest")
OCI = E["oci"]
EMBEDDED_MESSAGE = "is an embedded image: it carries no OCI config and cannot be inspected"


def isulad_backend(graph, manifests=None, name="isulad"):
    lines = ["[[backend]]", 'type = "isulad"', f'name = "{name}"', f'path = "{graph}"']
    if manifests is not None:
        lines.append(f'embedded_manifests = "{manifests}"')
    return "\n".join(lines) + "\n"


FIXTURE_CONFIG = isulad_backend(os.path.join(ISULAD, "graph"), os.path.join(ISULAD, "embedded"))


@pytest.fixture
def server(serve):
    return serve(FIXTURE_CONFIG)


def by_id(images):
    return {i.id: i for i in images}


def test_expected_ids_are_the_manifest_digests():
    # What iSulad records as the config digest: sha256 of the manifest file, as its .sgn says.
    for e in E["embedded"]:
        with open(os.path.join(ISULAD, "embedded", e["manifest"]), "rb") as f:
            digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        assert digest == e["id"]
        with open(os.path.join(ISULAD, "embedded", e["manifest"][: -len(".manifest")] + ".sgn")) as f:
            assert f.read() == digest


def test_embedded_images_are_listed_with_config_digest_id_and_no_digest(server):
    images = by_id(server.list_images())
    assert set(images) == {TEST["id"], TOOLS["id"], OCI["id"]}
    for e in (TEST, TOOLS):
        image = images[e["id"]]
        assert list(image.repo_tags) == [e["tag"]]
        assert list(image.repo_digests) == []
        assert image.size == e["size"] and image.size > 0
        assert not image.HasField("uid") and image.username == ""


def test_embedded_image_in_db_and_directory_is_one_image(server):
    # test.manifest is both in sqlite.db and in the manifests directory.
    assert [i.id for i in server.list_images()].count(TEST["id"]) == 1


def test_bad_signature_and_missing_signature_are_skipped_and_logged(server):
    tags = {t for i in server.list_images() for t in i.repo_tags}
    assert not any("bad-sgn" in t or "no-sgn" in t for t in tags)
    log = server.log()
    for skipped in E["skipped"]:
        path = os.path.join(ISULAD, "embedded", skipped)
        assert log.count(path) == 1, log


@pytest.mark.parametrize("ref", ["test:v1", "docker.io/library/test:v1", TEST["id"], TEST["id"][7:], TEST["id"][7:19], TEST["id"][:19]])
def test_image_status_of_embedded_image_is_ok_with_image_unset(server, ref):
    r = server.image_status(ref)
    assert not r.HasField("image"), ref
    assert not r.info


@pytest.mark.parametrize("ref", ["test:v1", "docker.io/library/test", TEST["id"], TEST["id"][7:19]])
def test_list_images_filter_naming_embedded_image_returns_it(server, ref):
    images = server.list_images(ref)
    assert [i.id for i in images] == [TEST["id"]], ref
    assert list(images[0].repo_digests) == []


def test_inspecti_of_embedded_image_says_so_in_one_line(workdir):
    config = os.path.join(workdir, "imagelet.toml")
    with open(config, "w") as f:
        f.write(FIXTURE_CONFIG)
    out = run_cli("inspecti", "--config", config, "test:v1")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert f'image "test:v1" {EMBEDDED_MESSAGE}' in out.stderr
    # An OCI image of the same store is inspected normally.
    ok = run_cli("inspecti", "--config", config, "busybox")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"]["id"] == OCI["id"]


def test_oci_image_from_isulad_store_is_served(server):
    for ref in ("busybox", "busybox:latest", "example.com/edge/hello:1.0", OCI["id"], f"busybox@{OCI['digest']}"):
        r = server.image_status(ref)
        assert r.HasField("image"), ref
        image = r.image
        assert image.id == OCI["id"]
        assert sorted(image.repo_tags) == sorted(OCI["tags"])
        assert sorted(image.repo_digests) == sorted(OCI["repoDigests"])
        assert image.size == OCI["size"]
        assert image.username == "app"
    verbose = server.image_status("busybox", verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["imageSpec"]["config"]["User"] == "app"


def copy_fixture(workdir):
    dst = os.path.join(workdir, "isulad")
    shutil.copytree(ISULAD, dst, symlinks=True)
    return os.path.join(dst, "graph"), os.path.join(dst, "embedded")


def test_corrupt_images_json_and_database_are_logged_once_and_the_rest_served(serve, workdir):
    graph, manifests = copy_fixture(workdir)
    images_json = os.path.join(graph, "storage", "vfs-images", OCI["id"][7:], "images.json")
    with open(images_json, "w") as f:
        f.write('{"id": "trunc')
    db = os.path.join(graph, "sqlite.db")
    with open(db, "wb") as f:
        f.write(b"this is not a database" * 100)
    s = serve(isulad_backend(graph, manifests))
    ids = {i.id for i in s.list_images()}
    # The db's image is also in the manifests directory; the OCI image is gone.
    assert ids == {TEST["id"], TOOLS["id"]}
    s.list_images()
    log = s.log()
    assert log.count(images_json) == 1, log
    assert log.count(db) == 1, log
    assert "isulad" in log


def test_symlink_leaving_store_and_missing_big_data_are_skipped(serve, workdir):
    graph, manifests = copy_fixture(workdir)
    image_dir = os.path.join(graph, "storage", "vfs-images", OCI["id"][7:])
    os.remove(os.path.join(image_dir, "manifest"))
    outside = os.path.join(workdir, "outside.manifest")
    shutil.copy(os.path.join(manifests, "tools.manifest"), outside)
    os.remove(os.path.join(manifests, "tools.manifest"))
    os.symlink(outside, os.path.join(manifests, "tools.manifest"))
    s = serve(isulad_backend(graph, manifests))
    assert {i.id for i in s.list_images()} == {TEST["id"]}
    log = s.log()
    assert log.count(os.path.join(image_dir, "manifest")) == 1, log
    assert "resolves outside the store" in log


def test_missing_graph_root_is_reported_and_other_backends_serve(serve, workdir):
    graph, manifests = copy_fixture(workdir)
    shutil.rmtree(graph)
    s = serve(oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="umoci") + isulad_backend(graph, manifests))
    assert OCI["id"] in {i.id for i in s.list_images()}  # the same config, from the OCI layout
    assert not s.image_status("test:v1").HasField("image")
    assert graph in s.log()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to another user")
def test_file_the_service_may_not_read_is_logged_and_skipped(workdir):
    # Root reads everything, so the service runs as nobody here; the unit test covers non-root runs.
    os.chmod(workdir, 0o755)
    graph, manifests = copy_fixture(workdir)
    for d, _, files in os.walk(os.path.join(workdir, "isulad")):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    images_json = os.path.join(graph, "storage", "vfs-images", OCI["id"][7:], "images.json")
    os.chmod(images_json, 0)
    config = os.path.join(workdir, "imagelet.toml")
    with open(config, "w") as f:
        f.write(isulad_backend(graph, manifests))
    os.chmod(config, 0o644)
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", BIN, "images", "-q", "--log-level", "warn", "--config", config],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted([TEST["id"], TOOLS["id"]])
    assert out.stderr.count(images_json) == 1, out.stderr
    assert "EACCES" in out.stderr
