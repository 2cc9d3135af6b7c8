"""The docker backend through the compiled binary and a C-core client, on the
store dockerd made (scripts/make-fixtures-docker), next to the OCI layout that
holds the same images. Expected values are what docker reported."""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from conftest import FIXTURES, BIN, expected, oci_backend, run_cli
from written_manifest import docker_digest, repo_digests

DOCKER = os.path.join(FIXTURES, "docker")
ROOT = os.path.join(DOCKER, "root")
with open(os.path.join(DOCKER, "expected.json")) as f:
    D = json.load(f)
OCI = {(e["layout"], e["ref"]): e for e in expected()}
INSPECT = {i["Id"]: i for i in D["inspect"]}
SHOWN = sorted({r["ID"] for r in D["images"]})  # `docker images` (no -a)
HELLO = next(i for i in D["inspect"] if "busybox-alias:mytag" in i["RepoTags"])
TOOL = next(i for i in D["inspect"] if i["RepoDigests"])
EMPTY = next(i for i in D["inspect"] if i["Size"] == 0)
DANGLING = next(r["ID"] for r in D["images"] if r["Repository"] == "<none>")
HIDDEN = sorted({r["ID"] for r in D["imagesAll"]} - set(SHOWN))
DRIVER_DIR = os.path.join(ROOT, "image", "vfs")


def written_repo_digests(want):
    """docs/mirror.md, "Manifests imagelet writes": every repository Docker names the image in
    (tags and its recorded repo digests) @ the written manifest's digest, never Docker's own digest."""
    names = [qualified(n) for n in want["RepoTags"] + want["RepoDigests"]]
    return repo_digests(names, docker_digest(DRIVER_DIR, want["Id"])) if names else []


def docker_backend(path, name=None, **options):
    lines = ["[[backend]]", 'type = "docker"', f'path = "{path}"']
    if name:
        lines.append(f'name = "{name}"')
    lines += [f'{k} = "{v}"' for k, v in options.items()]
    return "\n".join(lines) + "\n"


def qualified(name):
    """Docker's familiar names, qualified by the distribution reference rules."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    return name if first == "localhost" or "." in first or ":" in first else f"docker.io/{name}"


@pytest.fixture
def both(serve):
    return serve(docker_backend(ROOT, name="engine") + oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="oci-umoci"))


def test_docker_and_oci_layout_share_images_once_with_the_union_of_names(both):
    images = both.list_images()
    ids = [i.id for i in images]
    assert len(ids) == len(set(ids))
    # The OCI layout's two images were loaded into Docker: same config, same ID.
    assert HELLO["Id"] == OCI[("oci-umoci", "1.0")]["id"]
    assert TOOL["Id"] == OCI[("oci-umoci", "2.0")]["id"]
    assert set(ids) == set(SHOWN)
    by_id = {i.id: i for i in images}
    hello = by_id[HELLO["Id"]]
    assert sorted(hello.repo_tags) == sorted(
        {qualified(t) for t in HELLO["RepoTags"]} | {"localhost/oci-umoci:1.0", "localhost/oci-umoci:latest", "example.com/edge/hello:1.0"}
    )
    assert "docker.io/library/busybox-alias:mytag" in hello.repo_tags
    entry = OCI[("oci-umoci", "1.0")]["entryDigest"]
    assert sorted(hello.repo_digests) == sorted(
        [f"{r}@{entry}" for r in ("example.com/edge/hello", "localhost/oci-umoci")] + written_repo_digests(HELLO)
    )
    tool = by_id[TOOL["Id"]]
    assert set(written_repo_digests(TOOL)) <= set(tool.repo_digests)
    assert not set(TOOL["RepoDigests"]) & set(tool.repo_digests)
    assert {qualified(t) for t in TOOL["RepoTags"]} | {"localhost/oci-umoci:2.0"} == set(tool.repo_tags)


def test_docker_only_images_agree_with_docker_inspect(both):
    by_id = {i.id: i for i in both.list_images()}
    for image_id in SHOWN:
        want = INSPECT[image_id]
        if image_id in (HELLO["Id"], TOOL["Id"]):
            continue  # merged with the OCI layout above
        got = by_id[image_id]
        assert sorted(got.repo_tags) == sorted(qualified(t) for t in want["RepoTags"])
        assert list(got.repo_digests) == written_repo_digests(want)
        assert got.size == (want["Size"] if want["Size"] > 0 else want["ConfigBytes"])
        assert got.size > 0
    assert by_id[EMPTY["Id"]].size == EMPTY["ConfigBytes"]
    assert list(by_id[DANGLING].repo_tags) == []
    assert by_id[DANGLING].uid.value == 1234


def test_image_status_by_short_name_repo_digest_and_id(both):
    status = both.image_status("busybox-alias:mytag", verbose=True)
    assert status.image.id == HELLO["Id"]
    assert json.loads(status.info["info"])["imageSpec"]["config"]["User"] == "app"
    pinned = next(d for d in written_repo_digests(TOOL) if d.startswith(TOOL["RepoDigests"][0].split("@")[0] + "@"))
    assert both.image_status(pinned).image.id == TOOL["Id"]
    # Docker's own repo digest names compressed layers the node does not have: not present here.
    assert not both.image_status(TOOL["RepoDigests"][0]).HasField("image")
    assert both.image_status(DANGLING).image.id == DANGLING
    # Build intermediates are hidden, as `docker images` hides them.
    assert HIDDEN
    for image_id in HIDDEN:
        assert not both.image_status(image_id).HasField("image")


def test_containerd_store_mode_is_a_notice_in_plugins_and_the_log(workdir, serve):
    root = os.path.join(workdir, "docker-root")
    os.makedirs(os.path.join(root, "containerd", "daemon"))
    os.makedirs(os.path.join(root, "image"))
    config = os.path.join(workdir, "plugins.toml")
    with open(config, "w") as f:
        f.write(docker_backend(root, name="engine"))
    meta = os.path.join(root, "containerd", "daemon", "io.containerd.metadata.v1.bolt", "meta.db")
    # No meta.db yet (Docker has stored nothing there): no images, said so; test_backend_containerd reads a real one.
    notice = f"Docker at {root} uses the containerd image store; no images there yet (no {meta})"
    out = run_cli("plugins", "--config", config, "-o", "json")
    assert out.returncode == 0, out.stderr
    (engine,) = json.loads(out.stdout)["backends"]
    assert engine["state"] == "ok" and engine["images"] == 0 and engine["notice"] == notice
    table = run_cli("plugins", "--config", config)
    assert notice in table.stdout
    server = serve(docker_backend(root, name="engine"), subdir="serve")
    assert len(server.list_images()) == 0
    assert notice in server.log()


def test_damaged_store_is_logged_with_the_path_and_the_rest_served(workdir, serve):
    root = os.path.join(workdir, "root")
    shutil.copytree(ROOT, root, symlinks=True)
    content = os.path.join(root, "image", D["driver"], "imagedb", "content", "sha256")
    broken = os.path.join(content, EMPTY["Id"][7:])
    with open(broken, "a") as f:
        f.write(" ")
    server = serve(docker_backend(root, name="engine"))
    ids = {i.id for i in server.list_images()}
    assert ids == set(SHOWN) - {EMPTY["Id"]}
    log = server.log()
    assert "does not match its name" in log and broken in log and "backend=engine" in log


@pytest.fixture
def open_tmp():
    """A temporary directory nobody may enter (pytest's own tmp_path sits under a 0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="imagelet-docker-it-") as d:
        os.chmod(d, 0o755)
        yield pathlib.Path(d)


def test_unreadable_config_as_an_unprivileged_user(open_tmp):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    tmp_path = open_tmp
    root = tmp_path / "root"
    shutil.copytree(ROOT, root, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    secret = root / "image" / D["driver"] / "imagedb" / "content" / "sha256" / HELLO["Id"][7:]
    os.chmod(secret, 0o600)
    config = tmp_path / "c.toml"
    config.write_text(docker_backend(str(root), name="engine"))
    config.chmod(0o644)
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN, "images", "-q", "--config", str(config), "--log-level", "warn"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"the binary is not runnable by nobody: {out.stderr}")
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == set(SHOWN) - {HELLO["Id"]}
    assert "EACCES" in out.stderr and str(secret) in out.stderr
