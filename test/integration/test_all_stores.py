"""All six kinds of store at once (OCI layouts, image archives, containers/storage,
Docker, iSulad with embedded images, containerd): every image is listed once, with
the tags, IDs and digests the tools that made the stores reported (each fixture's
expected.json; for containerd, its own CRI plugin's answer). Names are normalized here by the test's own small function.
Stores that keep no servable manifest (docker-archive, containers/storage, Docker) are listed with
the repo digests of the manifest imagelet writes (docs/mirror.md), worked out by written_manifest.py
from their files, instead of the registry digests podman and docker report."""
import json
import os
import re

import pytest

from conftest import FIXTURES, run_cli, store_backends
from written_manifest import cstorage_digest, docker_archive_digests, docker_digest, repo_digests


def load(name):
    with open(os.path.join(FIXTURES, name, "expected.json") if name else os.path.join(FIXTURES, "expected.json")) as f:
        return json.load(f)


def normalize_repo(repo):
    """docker/distribution's familiar-name rule, enough for the fixtures' names."""
    first, _, rest = repo.partition("/")
    if not rest:
        return f"docker.io/library/{repo}"
    if "." in first or ":" in first or first == "localhost":
        return repo
    return f"docker.io/{repo}"


def normalize(ref):
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return f"{normalize_repo(repo)}@{digest}"
    m = re.match(r"^(.*?)(?::([\w][\w.-]*))?$", ref)
    repo, tag = m.group(1), m.group(2) or "latest"
    return f"{normalize_repo(repo)}:{tag}"


def tool_view():
    """{image id: {"tags": set, "digests": set, "embedded": bool}} from every tool's own report."""
    view = {}

    def add(image_id, tags=(), digests=(), embedded=False):
        v = view.setdefault(image_id, {"tags": set(), "digests": set(), "embedded": embedded})
        v["tags"].update(normalize(t) for t in tags)
        v["digests"].update(normalize(d) for d in digests)

    for e in load(None):  # skopeo on the OCI layouts
        add(e["id"])
    for tarball in load("archives"):  # skopeo/podman/ctr on the archives
        stem = re.sub(r"\.(tar|tar\.gz|tgz)$", "", tarball["file"])
        for image in tarball["images"]:
            # A bare-tag ref.name is a tag of localhost/<tarball name> (the archives backend's documented rule).
            image = {**image, "tags": [t if re.search(r"[/:@]", t) else f"localhost/{stem}:{t}" for t in image["tags"]]}
            # skopeo reports the bare digest of the index.json entry: one repo digest per tagged repository.
            digest = image.get("repoDigest")
            if tarball["format"] == "docker-archive":
                digest = docker_archive_digests(os.path.join(FIXTURES, "archives", "store", tarball["file"]))[image["id"]]
            repos = {normalize(t).rsplit(":", 1)[0] for t in image["tags"]}
            add(image["id"], image["tags"], [f"{r}@{digest}" for r in repos] if digest else [])
    cs = load("containers-storage")  # podman images / inspect
    for image in cs["images"]:
        written = cstorage_digest(os.path.join(FIXTURES, "containers-storage"), cs["driver"], image["Id"])
        add("sha256:" + image["Id"], [n for n in image["Names"] if "@" not in n], repo_digests(image["Names"], written))
    docker = load("docker")  # docker images / docker image inspect
    shown = {i["ID"] for i in docker["images"]}
    for image in docker["inspect"]:
        if image["Id"] in shown:
            names = [normalize(n) for n in image["RepoTags"] + image["RepoDigests"]]
            written = docker_digest(os.path.join(FIXTURES, "docker", "root", "image", "vfs"), image["Id"]) if names else None
            add(image["Id"], image["RepoTags"], repo_digests(names, written) if names else [])
    isulad = load("isulad")  # sha256sum / stat / skopeo on the iSulad fixture
    for e in isulad["embedded"]:
        add(e["id"], [e["tag"]], embedded=True)
    for e in [isulad["oci"]] if isinstance(isulad["oci"], dict) else isulad["oci"]:
        add(e["id"], e["tags"], e.get("repoDigests", []))
    for image in load("containerd")["cri"]:  # containerd 1.6's CRI ListImages on the containerd root
        add(image["id"], image["repoTags"], image["repoDigests"])
    return view


def all_stores_config():
    return "".join(store_backends().values())


@pytest.fixture(scope="module")
def expected():
    return tool_view()


def test_every_image_once_with_the_tools_names(serve, expected):
    s = serve(all_stores_config())
    images = s.list_images()
    ids = [i.id for i in images]
    assert len(ids) == len(set(ids)), "an image is listed twice"
    assert set(ids) == set(expected), (set(ids) ^ set(expected))
    by_id = {i.id: i for i in images}
    log = s.log()
    for image_id, want in expected.items():
        got = by_id[image_id]
        for tag in want["tags"]:
            if tag not in got.repo_tags:
                # Only a tag another image holds from an earlier backend may be missing, and that is logged.
                owner = s.image_status(tag).image.id
                assert owner != image_id and tag in log and "claimed by two images" in log, (image_id, tag)
        for digest in want["digests"]:
            assert digest in got.repo_digests, (image_id, digest, list(got.repo_digests))
        if want["embedded"]:
            assert list(got.repo_digests) == []
            assert not s.image_status(image_id).HasField("image")
        else:
            assert s.image_status(image_id).image.id == image_id
        assert got.size > 0


def test_cli_lists_every_image_once(workdir, expected):
    cfg = os.path.join(workdir, "all.toml")
    with open(cfg, "w") as f:
        f.write(all_stores_config())
    out = run_cli("images", "-q", "--config", cfg)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split()
    assert len(listed) == len(set(listed)) and set(listed) == set(expected)
    plugins = run_cli("plugins", "--config", cfg)
    assert plugins.returncode == 0
    assert [line.split()[2] for line in plugins.stdout.splitlines()[1:]] == ["ok"] * 8
