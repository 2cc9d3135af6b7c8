"""Real registry clients pull the fixture stores' images from imagelet's mirror.

One imagelet per kind of store (so each image is served from that kind, not from
another store holding the same image), with `[mirror] listen` on a free loopback
port. Then:
- skopeo (containers/image, the library CRI-O and podman pull with) copies every
  name of every image with the host-prefixed path into a dir: copy, and the copy
  is checked by this file's own reader: config digest = the CRI image ID imagelet
  reports, each layer uncompressed hashes to its diff_id, and for stores that keep
  the manifest the served manifest is byte for byte the stored one;
- containerd 1.6 pulls through certs.d/_default/hosts.toml, with ctr and with its
  CRI plugin's PullImage;
- podman pulls through a registries.conf mirror;
- dockerd pulls Docker Hub names through --registry-mirror.
Each pulled image's ID must equal imagelet's. Clients get CanaryProxy as their
HTTP(S) proxy: a pull that falls back to the real registry fails the test, and
each test first shows that the canary does catch a fallback (a name no store has).

MIRROR_TARGET=distribution runs the same tests against Debian's docker-registry
(distribution 2.8) fed by skopeo from the stores skopeo can read: the stand-in the
harness was proven on, kept as the comparison."""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import grpc
import pytest

import cri_stubs
import daemons
from conftest import FIXTURES, Server, store_backends
from mirror_client import mirror_address

TARGET = os.environ.get("MIRROR_TARGET", "imagelet")
# Kinds of store: conftest's, plus the archives backend over the docker-archive tarballs alone
# (in the whole archives store, the OCI tarballs holding the same images serve them).
KINDS = ["oci-layout", "archives", "docker-archive", "containers-storage", "docker", "containerd"]
# Whose served manifest must be the stored bytes; and whose must be the one imagelet writes.
KEEPS_MANIFEST = {"oci-layout", "containerd"}
WRITES_MANIFEST = {"docker-archive", "containers-storage", "docker"}
ABSENT = "docker.io/library/not-in-any-store:1.0"


def needs(*tools, root=True):
    """Skips when a client is missing (`apt-get install -y PACKAGE` is in the reason) or, for daemons, without root."""
    missing = [f"{t} ({p})" for t, p in tools if shutil.which(t) is None]
    if root and os.geteuid() != 0:
        missing.append("root")
    return pytest.mark.skipif(bool(missing), reason="needs " + ", ".join(missing))


SKOPEO = ("skopeo", "skopeo")


def registry_of(name):
    return name.split("/", 1)[0]


def path_of(name):
    """The repository path a client sends with the registry left out (containerd, Docker)."""
    return name.split("/", 1)[1]


def prefixable(name):
    """Whether a client that puts the registry in the mirror's path (skopeo's host-prefixed path,
    registries.conf's mirror location) can name it: a path component holds no port."""
    return ":" not in registry_of(name)


def repo_of(name):
    return name.split("@", 1)[0] if "@" in name else name.rsplit(":", 1)[0]


def run(argv, timeout=60, env=None):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- the mirror under test


class Mirror:
    """A registry serving one kind of store, and the CRI view of the same store (imagelet's)."""

    def __init__(self, kind, host, cri, log):
        self.kind, self.host, self.cri, self._log = kind, host, cri, log
        self.images = [
            {"id": i.id, "tags": list(i.repo_tags), "digests": list(i.repo_digests)} for i in cri.list_images()
        ]

    def log(self):
        return self._log()

    def names(self, image):
        """The names of `image` the mirror must serve: every tag and every repo digest CRI reports (for a
        store without a servable manifest, those name the manifest imagelet writes: docs/mirror.md). The
        stand-in was fed by tag and cannot know imagelet's written manifests."""
        return image["tags"] + ([] if TARGET != "imagelet" and self.kind not in KEEPS_MANIFEST else image["digests"])

    def pullable(self):
        """(image, its names) for every image with a name the mirror must serve."""
        return [(i, self.names(i)) for i in self.images if self.names(i)]


def backends(kind, work):
    """The [[backend]] tables of one kind of store."""
    if kind != "docker-archive":
        return store_backends()[kind]
    store = os.path.join(work, "docker-archives")
    os.makedirs(store)
    with open(os.path.join(FIXTURES, "archives", "expected.json")) as f:
        for tarball in json.load(f):
            if tarball["format"] == "docker-archive":
                shutil.copy(os.path.join(FIXTURES, "archives", "store", tarball["file"]), store)
    return f'[[backend]]\ntype = "archives"\npath = "{store}"\n'


def start_imagelet_mirror(kind, work):
    server = Server(work, backends(kind, work) + '\n[mirror]\nlisten = "127.0.0.1:0"\n')
    daemons.wait_for(lambda: "serving the registry mirror" in server.log(), 20, "imagelet mirror", server.log_path)
    host = "%s:%d" % mirror_address(server)
    assert daemons.http_status(f"http://{host}/v2/") == 200, server.log()
    return Mirror(kind, host, server, server.log), [server]


def standin_sources(kind, work):
    """{image id: skopeo source} for the stores skopeo reads itself."""
    sources = {}
    if kind == "oci-layout":
        for layout in ("oci-umoci", "oci-multi", "oci-skopeo-noref"):
            path = os.path.join(FIXTURES, layout)
            with open(os.path.join(path, "index.json")) as f:
                entries = json.load(f)["manifests"]
            for e in entries:
                ref = (e.get("annotations") or {}).get("org.opencontainers.image.ref.name")
                source = f"oci:{path}:{ref}" if ref else f"oci:{path}"
                sources.setdefault(config_of(lambda d: read_file_blob(path, d), e["digest"]), source)
    elif kind in ("archives", "docker-archive"):
        with open(os.path.join(FIXTURES, "archives", "expected.json")) as f:
            tarballs = [t for t in json.load(f) if kind == "archives" or t["format"] == "docker-archive"]
            # The OCI tarballs first: the archives view takes an image's manifest from them when it has one.
            for tarball in sorted(tarballs, key=lambda t: t["format"] == "docker-archive"):
                path = os.path.join(FIXTURES, "archives", "store", tarball["file"])
                if tarball["file"].endswith(".gz"):
                    continue  # skopeo 1.9 reads no compressed tarball
                if tarball["format"] == "docker-archive":
                    for image in tarball["images"]:
                        sources.setdefault(image["id"], f"docker-archive:{path}:{image['tags'][0]}")
                    continue
                with tarfile.open(path) as t:
                    refs = {e["digest"]: e["annotations"]["org.opencontainers.image.ref.name"]
                            for e in json.load(t.extractfile("index.json"))["manifests"]}
                for image in tarball["images"]:
                    sources.setdefault(image["id"], f"oci-archive:{path}:{refs[image['repoDigest']]}")
    elif kind == "containers-storage" and os.path.isdir(os.path.join(FIXTURES, "containers-storage", "vfs", "dir")):
        root = os.path.join(work, "cs-copy")  # skopeo takes the store's lock: a copy, not the fixture
        shutil.copytree(os.path.join(FIXTURES, "containers-storage"), root, symlinks=True)
        with open(os.path.join(FIXTURES, "containers-storage", "expected.json")) as f:
            for image in json.load(f)["images"]:
                sources["sha256:" + image["Id"]] = f"containers-storage:[vfs@{root}+{work}/cs-run]{image['Id']}"
    return sources


def start_standin_mirror(kind, work):
    """docker-registry fed with every name of every image skopeo can read from the store, under both
    the host-prefixed path (podman, skopeo) and the bare path (containerd, which sends ?ns=, and Docker)."""
    if shutil.which("docker-registry") is None:
        pytest.skip("the stand-in needs docker-registry (apt-get install -y docker-registry)")
    os.makedirs(os.path.join(work, "cri"))
    cri = Server(os.path.join(work, "cri"), backends(kind, work))
    reg = daemons.Distribution(os.path.join(work, "registry"))
    try:
        reg.start()
        sources = standin_sources(kind, work)
        for image in cri.list_images():
            src = sources.get(image.id)
            for tag in image.repo_tags if src else []:
                for dest in (tag, path_of(tag)):
                    out = run(["skopeo", "--insecure-policy", "copy", "-q", "--all", "--dest-tls-verify=false",
                               src, f"docker://{reg.host}/{dest}"])
                    assert out.returncode == 0, (src, dest, out.stderr)
    except BaseException:
        reg.stop()
        cri.stop()
        raise
    mirror = Mirror(kind, reg.host, cri, reg.log)
    # Only what was pushed can be pulled: the stand-in's view is the images it was fed, by their tags.
    mirror.images = [i for i in mirror.images if i["id"] in sources and i["tags"]]
    return mirror, [reg, cri]


@pytest.fixture(scope="module")
def mirror_for():
    """mirror_for(kind) → a Mirror serving that kind of store, started once per module."""
    started, cache = [], {}
    work = tempfile.mkdtemp(prefix="imagelet-mirror-")
    try:

        def get(kind):
            if kind not in cache:
                wd = os.path.join(work, kind)
                os.makedirs(wd)
                start = start_standin_mirror if TARGET == "distribution" else start_imagelet_mirror
                cache[kind], processes = start(kind, wd)
                started.extend(processes)
            if TARGET == "distribution" and not cache[kind].pullable():
                pytest.skip(f"the stand-in has no image of {kind} (skopeo cannot read that store)")
            assert cache[kind].images, f"{kind}: imagelet lists no image"
            return cache[kind]

        yield get
    finally:
        for p in started:
            p.stop()
        daemons.kill_scope(work)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def canary():
    with daemons.CanaryProxy() as c:
        yield c


# ---------------------------------------------------------------- this file's own image reader


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_file_blob(layout, digest):
    with open(os.path.join(layout, "blobs", *digest.split(":", 1)), "rb") as f:
        return f.read()


INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}


def pick_platform(index):
    """linux/amd64, as every client on this machine chooses."""
    for m in index["manifests"]:
        p = m.get("platform") or {}
        if p.get("os") == "linux" and p.get("architecture") == "amd64":
            return m["digest"]
    raise AssertionError(f"no linux/amd64 manifest in {index}")


def config_of(read, digest):
    """The config digest an index or manifest (by digest, read through `read`) leads to on linux/amd64."""
    doc = json.loads(read(digest))
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        return config_of(read, pick_platform(doc))
    return doc["config"]["digest"]


def uncompressed(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def check_copy(dest, want_id, what):
    """A skopeo dir: copy is the image `want_id`: config digest, blob digests, each layer's diff_id.
    Returns the manifest bytes as served, and the manifest imagelet's rule writes for this image."""
    with open(os.path.join(dest, "manifest.json"), "rb") as f:
        raw = f.read()
    manifest = json.loads(raw)
    config_digest = manifest["config"]["digest"]
    assert config_digest == want_id, (what, "config digest", config_digest, "CRI image ID", want_id)
    blob = lambda d: open(os.path.join(dest, d.split(":", 1)[1]), "rb").read()  # noqa: E731
    config = json.loads(blob(config_digest))
    assert sha256(blob(config_digest)) == config_digest, (what, "config bytes")
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(manifest["layers"]) == len(diff_ids), (what, "layers vs diff_ids")
    tars = []
    for layer, diff_id in zip(manifest["layers"], diff_ids):
        data = blob(layer["digest"])
        assert sha256(data) == layer["digest"] and len(data) == layer["size"], (what, "layer blob", layer)
        tar = uncompressed(data)
        assert sha256(tar) == diff_id, (what, "layer", layer["digest"], "diff_id", diff_id)
        tars.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": len(tar)})
    # docs/mirror.md, "Manifests imagelet writes": an OCI manifest over the config as stored and one
    # uncompressed layer per diff_id, keys in this order, no white space.
    written = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(blob(config_digest))},
            "layers": tars,
        },
        separators=(",", ":"),
    ).encode()
    return raw, written


def stored_blob(kind, digest):
    """The bytes a store itself holds under `digest`, or None: what a manifest-keeping store must serve."""
    algo, hexd = digest.split(":", 1)
    if kind == "oci-layout":
        places = [os.path.join(FIXTURES, n, "blobs", algo, hexd) for n in ("oci-umoci", "oci-multi", "oci-skopeo-noref")]
    elif kind == "containerd":
        places = [os.path.join(FIXTURES, "containerd", "root", "io.containerd.content.v1.content", "blobs", algo, hexd)]
    elif kind == "archives":
        store = os.path.join(FIXTURES, "archives", "store")
        for name in sorted(os.listdir(store)):
            with tarfile.open(os.path.join(store, name)) as t:
                try:
                    member = t.extractfile(f"blobs/{algo}/{hexd}")
                except KeyError:
                    continue
                if member is not None:
                    return member.read()
        return None
    else:
        return None
    for p in places:
        if os.path.exists(p):
            with open(p, "rb") as f:
                return f.read()
    return None


# ---------------------------------------------------------------- skopeo


@needs(SKOPEO, root=False)
@pytest.mark.parametrize("kind", KINDS)
def test_skopeo_copies_every_image_from_the_mirror_as_the_same_image(mirror_for, kind, workdir, canary):
    mirror = mirror_for(kind)
    copied, images = 0, set()
    for image, names in mirror.pullable():
        for name in filter(prefixable, names):
            ref = f"docker://{mirror.host}/{name}"
            dest = os.path.join(workdir, f"copy{copied}")
            out = run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false", ref, f"dir:{dest}"],
                      env=canary.env)
            assert out.returncode == 0, (ref, out.stderr, mirror.log()[-2000:])
            served, written = check_copy(dest, image["id"], ref)
            # The index or manifest the name resolves to, as the mirror sends it.
            raw = run(["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false", ref], env=canary.env)
            assert raw.returncode == 0, (ref, raw.stderr)
            top = raw.stdout.encode()
            digests = [d.split("@", 1)[1] for d in image["digests"] if d.startswith(repo_of(name) + "@")]
            if "@" in name:
                assert sha256(top) == name.split("@", 1)[1], ref
            # An archives store serves an OCI tarball's stored manifest, or a docker-archive's written one.
            is_written = TARGET == "imagelet" and top == written == served
            if mirror.kind in KEEPS_MANIFEST or (mirror.kind == "archives" and not is_written):
                for data in (top, served):
                    assert stored_blob(mirror.kind, sha256(data)) == data, (ref, "served manifest is not a stored one")
            elif mirror.kind in WRITES_MANIFEST and TARGET == "imagelet":
                assert is_written, (ref, "not the manifest imagelet's rule writes", top, written)
            if digests and TARGET == "imagelet":
                if mirror.kind in WRITES_MANIFEST:
                    # The repo digest CRI reports for this repository names that manifest, and nothing else.
                    assert digests == [sha256(written)], (ref, digests, sha256(written))
                elif sha256(top) not in digests:
                    # The repo digest CRI reports is the manifest the name serves, except for a repository
                    # only a docker-archive names, when an OCI tarball holds the same image and gives its
                    # tags the stored manifest: the docker-archive's names list the written manifest's
                    # digest (docs/mirror.md), which is served too (test_repo_digests_cri_reports_are_pullable).
                    assert mirror.kind == "archives" and digests == [sha256(written)], (ref, sha256(top), digests)
            copied += 1
            images.add(image["id"])
    assert images == {i["id"] for i, _ in mirror.pullable()}, "an image skopeo could not name"
    assert canary.take() == []


@needs(SKOPEO, root=False)
def test_isulad_images_are_not_served(mirror_for, canary):
    """iSulad's tar-split cannot re-create layers: its images are listed on CRI but answer 404."""
    if TARGET != "imagelet":
        pytest.skip("the stand-in has no iSulad images")
    mirror = mirror_for("isulad")
    assert mirror.images
    for image in mirror.images:
        for name in image["tags"][:1] + image["digests"][:1]:
            out = run(["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false",
                       f"docker://{mirror.host}/{name}"], env=canary.env)
            # MANIFEST_UNKNOWN or NAME_UNKNOWN: a 404 the client reports as such, not a server error.
            assert out.returncode != 0 and "unknown" in out.stderr.lower(), (name, out.stdout[:200], out.stderr)
    assert canary.take() == []


# ---------------------------------------------------------------- containerd


def hosts_dir(work, mirror_host, names, canary):
    """certs.d/_default/hosts.toml sending every registry to the mirror first. A registry on loopback
    (`127.0.0.1:5055/...`) would be reached directly on fallback, past the proxy, so it gets its own
    directory whose upstream `server` is the canary."""
    d = os.path.join(work, "certs.d")
    mirror = f'[host."http://{mirror_host}"]\n  capabilities = ["pull", "resolve"]\n'
    loopback = {r for r in map(registry_of, names) if r.split(":")[0] in ("127.0.0.1", "localhost")}
    for sub, text in [("_default", mirror), *((r, f'server = "{canary.url}"\n' + mirror) for r in loopback)]:
        os.makedirs(os.path.join(d, sub))
        with open(os.path.join(d, sub, "hosts.toml"), "w") as f:
            f.write(text)
    return d


class ContainerdPulling:
    """containerd with its CRI plugin, pulling through certs.d/_default/hosts.toml pointed at the mirror;
    ctr pulls into its own namespace and, content not being shared, fetches every blob itself."""

    def __init__(self, mirror, workdir, canary):
        self.mirror, self.canary = mirror, canary
        names = [n for i in mirror.images for n in i["tags"] + i["digests"]]
        self.certs = hosts_dir(workdir, mirror.host, names, canary)
        self.ctd = daemons.Containerd(os.path.join(workdir, "containerd"), hosts_dir=self.certs, isolated=True,
                                      proxy_env=canary.env)

    def __enter__(self):
        try:
            self.ctd.start()
            self.channel = grpc.insecure_channel(f"unix:{self.ctd.socket}")
            self.pb, pbg = cri_stubs.load()
            self.cri = pbg.ImageServiceStub(self.channel)
            daemons.wait_for(self.cri_ready, 30, "containerd CRI", self.ctd.log_path)
        except BaseException:
            self.ctd.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.channel.close()
        self.ctd.stop()

    def cri_ready(self):
        try:
            self.cri.ListImages(self.pb.ListImagesRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    def ctr_pull(self, name):
        return self.ctd.ctr("images", "pull", "--snapshotter", "native", "--hosts-dir", self.certs, name,
                            namespace="ctr", env=self.canary.env, check=False, timeout=120)

    def ctr_image_id(self, name):
        """The config digest of the image ctr pulled, read from containerd's content store with ctr."""
        listing = self.ctd.ctr("images", "ls", namespace="ctr")
        target = next(line.split()[2] for line in listing.splitlines()[1:] if line.split()[0] == name)

        def read(digest):
            out = subprocess.run(["ctr", "--address", self.ctd.socket, "--namespace", "ctr", "content", "get", digest],
                                 capture_output=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return out.stdout

        return config_of(read, target)

    def pull_and_check(self, name, want_id):
        out = self.ctr_pull(name)
        assert out.returncode == 0, (name, out.stderr[-2000:], self.mirror.log()[-2000:])
        assert self.ctr_image_id(name) == want_id, name


NEEDS_CONTAINERD = needs(("containerd", "containerd"), ("ctr", "containerd"))


@NEEDS_CONTAINERD
@pytest.mark.parametrize("kind", KINDS)
def test_containerd_pulls_through_hosts_toml_with_ctr_and_cri(mirror_for, kind, workdir, canary):
    mirror = mirror_for(kind)
    with ContainerdPulling(mirror, workdir, canary) as c:
        # The canary catches a fallback: a name no store has goes past the mirror to docker.io.
        out = c.ctr_pull(ABSENT)
        assert out.returncode != 0 and any("docker.io" in r for r in canary.take()), out.stderr
        for image, names in mirror.pullable():
            c.pull_and_check(names[0], image["id"])
            # kubelet's way: CRI PullImage, hosts from the CRI plugin's config_path.
            pb = c.pb
            pulled = c.cri.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=names[-1])), timeout=120)
            status = c.cri.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=names[-1])), timeout=10)
            assert pulled.image_ref == image["id"] and status.image.id == image["id"], (names[-1], pulled.image_ref)
        assert canary.take() == []


@NEEDS_CONTAINERD
@pytest.mark.parametrize("kind", KINDS)
def test_repo_digests_cri_reports_are_pullable(mirror_for, kind, workdir, canary):
    """A pod pinned by digest pulls by the repo digest CRI shows: every one must come from the mirror
    (for a store without a servable manifest, the written manifest's digest: docs/mirror.md)."""
    if TARGET != "imagelet":
        pytest.skip("the stand-in serves the names it was fed by tag")
    mirror = mirror_for(kind)
    digests = [(d, i["id"]) for i in mirror.images for d in i["digests"]]
    assert digests, f"{kind}: no repo digest on CRI"
    with ContainerdPulling(mirror, workdir, canary) as c:
        for name, want in digests:
            c.pull_and_check(name, want)
        assert canary.take() == []


# ---------------------------------------------------------------- podman


def registries_conf(path, mirror_host, names):
    """One [[registry]] per registry named, mirrored at <mirror>/<registry>; the primary stays the real one."""
    with open(path, "w") as f:
        f.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        for reg in sorted({registry_of(n) for n in names} | {"docker.io"}):
            f.write(f'\n[[registry]]\nprefix = "{reg}"\nlocation = "{reg}"\n'
                    f'[[registry.mirror]]\nlocation = "{mirror_host}/{reg}"\ninsecure = true\n')


@needs(("podman", "podman"))
@pytest.mark.parametrize("kind", KINDS)
def test_podman_pulls_through_a_registries_conf_mirror(mirror_for, kind, workdir, canary):
    mirror = mirror_for(kind)
    # One name each: registries.conf cannot name a registry with a port (see prefixable()).
    images = [(i, n[0]) for i, names in mirror.pullable() if (n := [x for x in names if prefixable(x)])]
    assert images, f"no image of {kind} podman can name"
    conf = os.path.join(workdir, "registries.conf")
    registries_conf(conf, mirror.host, [n for _, n in images] + [ABSENT])
    storage = os.path.join(workdir, "storage.conf")
    with open(storage, "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{workdir}/root"\nrunroot = "{workdir}/run"\n')
    containers = os.path.join(workdir, "containers.conf")
    with open(containers, "w") as f:
        f.write('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    env = {**canary.env, "CONTAINERS_REGISTRIES_CONF": conf, "CONTAINERS_STORAGE_CONF": storage,
           "CONTAINERS_CONF": containers, "TMPDIR": workdir}
    podman = ["podman", "--root", f"{workdir}/root", "--runroot", f"{workdir}/run", "--storage-driver", "vfs",
              "--tmpdir", f"{workdir}/tmp", "--events-backend", "file", "--cgroup-manager", "cgroupfs"]
    try:
        out = run([*podman, "pull", "-q", ABSENT], env=env)
        assert out.returncode != 0 and any("docker.io" in r for r in canary.take()), out.stderr
        for image, name in images:
            out = run([*podman, "pull", "-q", name], env=env)
            assert out.returncode == 0, (name, out.stderr[-2000:], mirror.log()[-2000:])
            got = run([*podman, "image", "inspect", "--format", "{{.Id}}", name], env=env)
            assert "sha256:" + got.stdout.strip() == image["id"], (name, got.stdout, got.stderr)
        assert canary.take() == []
    finally:
        daemons.kill_scope(workdir)


# ---------------------------------------------------------------- Docker


@needs(("dockerd", "docker.io"), (daemons.DOCKER_CLI, "docker.io"))
@pytest.mark.parametrize("kind", ["archives", "docker-archive", "docker", "containerd"])
def test_docker_pulls_docker_hub_names_through_registry_mirrors(mirror_for, kind, workdir, canary):
    mirror = mirror_for(kind)
    hub = [(t, i["id"]) for i in mirror.images for t in i["tags"] if registry_of(t) == "docker.io"]
    assert hub, f"no Docker Hub name among {kind}'s images"
    dockerd = daemons.Dockerd(os.path.join(workdir, "docker"), mirrors=[f"http://{mirror.host}"], proxy_env=canary.env)
    try:
        dockerd.start()
        out = dockerd.docker("pull", ABSENT)
        assert out.returncode != 0 and any("docker.io" in r for r in canary.take()), out.stderr
        for name, want in hub:
            out = dockerd.docker("pull", name)
            assert out.returncode == 0, (name, out.stderr[-2000:], mirror.log()[-2000:], dockerd.log()[-2000:])
            got = dockerd.docker("image", "inspect", "--format", "{{.Id}}", name)
            assert got.stdout.strip() == want, (name, got.stdout, got.stderr)
            # The next name of the same image must be pulled again, not found locally.
            assert dockerd.docker("rmi", "-f", want).returncode == 0
        assert canary.take() == []
    finally:
        dockerd.stop()
