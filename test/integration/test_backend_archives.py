"""The archives backend through the compiled binary, next to an oci-layout backend.

Expected values come from test/fixtures/archives/expected.json, which
scripts/make-fixtures-archives recorded from skopeo, podman and containerd.
"""
import json
import os
import shutil
import time

from conftest import FIXTURES, expected, oci_backend
from written_manifest import docker_archive_digests, repo_digests

ARCHIVES = os.path.join(FIXTURES, "archives")
with open(os.path.join(ARCHIVES, "expected.json")) as f:
    A = {t["file"]: t for t in json.load(f)}
HELLO = A["hello-docker.tar"]["images"][0]
TOOLS = A["tools-docker.tar.gz"]["images"][0]
LAYOUT_HELLO = next(e for e in expected() if e["layout"] == "oci-umoci" and e["ref"] == "1.0")


def archives_backend(path, name="archives", **options):
    lines = ["[[backend]]", 'type = "archives"', f'name = "{name}"', f'path = "{path}"']
    lines += [f'{k} = "{v}"' for k, v in options.items()]
    return "\n".join(lines) + "\n"


def store_with(workdir, *files):
    d = os.path.join(workdir, "archives")
    os.makedirs(d, exist_ok=True)
    for f in files:
        shutil.copy(os.path.join(ARCHIVES, "store", f), os.path.join(d, f))
    return d


def wait_for(fn, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def by_id(images):
    return {i.id: i for i in images}


def test_archives_next_to_an_oci_layout_agree_with_the_tools(serve, workdir):
    d = store_with(workdir, *A)
    s = serve(oci_backend(os.path.join(FIXTURES, "oci-umoci"), name="layout") + archives_backend(d))
    images = by_id(s.list_images())
    # The layout's hello and the archives' hello are the same config: one image.
    assert LAYOUT_HELLO["id"] == HELLO["id"]
    assert set(images) == {HELLO["id"], TOOLS["id"]}
    hello, tools = images[HELLO["id"]], images[TOOLS["id"]]
    for tag in ("example.com/edge/hello:1.0", "docker.io/library/busybox-alias:mytag", "localhost/oci-umoci:1.0"):
        assert tag in hello.repo_tags
    # The layout holds the tools image too, as localhost/oci-umoci:2.0; the layout is configured first.
    assert sorted(tools.repo_tags) == ["docker.io/library/edge-tools:2.0", "localhost/oci-umoci:2.0", "localhost/tools-bare:2.0"]
    oci_digest = A["hello-oci.tar"]["images"][0]["repoDigest"]
    assert f"example.com/edge/hello@{oci_digest}" in hello.repo_digests
    assert f"localhost/tools-bare@{A['tools-bare.tar.gz']['images'][0]['repoDigest']}" in tools.repo_digests
    # hello-docker.tar keeps no registry manifest: its names are listed at the manifest imagelet writes.
    written = docker_archive_digests(os.path.join(d, "hello-docker.tar"))[HELLO["id"]]
    assert set(repo_digests(HELLO["tags"], written)) <= set(hello.repo_digests)
    assert tools.uid.value == 1000
    assert hello.size > 0 and tools.size > 0


def test_docker_archive_repo_digests_name_the_written_manifest_and_its_size(serve, workdir):
    d = store_with(workdir, "multi-docker.tar")
    s = serve(archives_backend(d))
    images = by_id(s.list_images())
    multi = A["multi-docker.tar"]["images"]
    written = docker_archive_digests(os.path.join(d, "multi-docker.tar"))
    assert set(images) == {m["id"] for m in multi}
    for m in multi:
        img = images[m["id"]]
        # docs/mirror.md, "Manifests imagelet writes": each tag's repository @ the written manifest's digest.
        assert list(img.repo_digests) == repo_digests(m["tags"], written[m["id"]])
        assert list(img.repo_tags) == m["tags"]
        assert img.size == m["size"]
    # A familiar name finds the docker.io image; a repo digest finds nothing.
    st = s.image_status("edge-tools:2.0")
    assert st.image.id == TOOLS["id"]
    assert not s.image_status(f"example.com/edge/hello@{A['hello-oci.tar']['images'][0]['repoDigest']}").HasField("image")


def test_image_status_verbose_from_an_oci_archive(serve, workdir):
    d = store_with(workdir, "tools-bare.tar.gz")
    s = serve(archives_backend(d))
    st = s.image_status("localhost/tools-bare:2.0", verbose=True)
    assert st.image.id == TOOLS["id"]
    info = json.loads(st.info["info"])
    assert info["imageSpec"]["config"]["User"] == TOOLS["user"]


def test_added_replaced_and_removed_tarballs_are_visible_without_restart(serve, workdir):
    d = store_with(workdir, "hello-oci.tar")
    s = serve(archives_backend(d))
    assert [i.id for i in s.list_images()] == [HELLO["id"]]
    # Added the careful way: copied under a name the backend ignores, then renamed.
    shutil.copy(os.path.join(ARCHIVES, "store", "tools-docker.tar.gz"), os.path.join(d, "incoming.part"))
    os.rename(os.path.join(d, "incoming.part"), os.path.join(d, "tools.tar.gz"))
    assert wait_for(lambda: len(s.list_images()) == 2)
    # Replaced: hello-oci.tar now holds the tools image.
    shutil.copy(os.path.join(ARCHIVES, "store", "tools-bare.tar.gz"), os.path.join(d, "next.part"))
    os.rename(os.path.join(d, "next.part"), os.path.join(d, "hello-oci.tar"))
    assert wait_for(lambda: [i.id for i in s.list_images()] == [TOOLS["id"]])
    assert "localhost/hello-oci:2.0" in s.list_images()[0].repo_tags
    os.remove(os.path.join(d, "tools.tar.gz"))
    assert wait_for(lambda: list(s.list_images()[0].repo_tags) == ["localhost/hello-oci:2.0"])


def test_bad_tarballs_are_logged_with_their_path_and_the_rest_is_served(serve, workdir):
    d = store_with(workdir, "hello-docker.tar", "tools-bare.tar.gz")
    truncated = os.path.join(d, "truncated.tar")
    with open(os.path.join(ARCHIVES, "store", "multi-docker.tar"), "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(d, "junk.tar"), "w") as f:
        f.write("not a tar\n" * 100)
    os.symlink("/etc/hostname", os.path.join(d, "outside.tar"))
    s = serve(archives_backend(d))
    assert set(by_id(s.list_images())) == {HELLO["id"], TOOLS["id"]}
    log = s.log()
    for name, text in (("truncated.tar", "truncated"), ("junk.tar", "not a tar archive"), ("outside.tar", "outside the store")):
        lines = [l for l in log.splitlines() if os.path.join(d, name) in l]
        assert len(lines) == 1 and text in lines[0] and "archives" in lines[0], log


def test_a_removed_directory_keeps_the_last_snapshot(serve, workdir):
    d = store_with(workdir, "hello-oci.tar")
    s = serve('poll_interval = "100ms"\n' + archives_backend(d))
    assert len(s.list_images()) == 1
    shutil.rmtree(d)
    assert wait_for(lambda: "cannot list the archive directory" in s.log())
    assert [i.id for i in s.list_images()] == [HELLO["id"]]
    assert d in next(l for l in s.log().splitlines() if "cannot list the archive directory" in l)
