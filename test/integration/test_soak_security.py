"""Reliability suite, security rules (issue #8), each through the compiled
binary: the socket's mode, owner, group and directory; no inet listener; no
path from store content or a request reaches outside its store (watched with
inotify: nothing outside is even opened); logs hold no request payload beyond
the reference, and references and store content are escaped.
(Plugin permission rules are tested with the plugins: test_plugins*.py.)"""
import base64
import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile

import grpc
import pytest

import soak_scenarios
from conftest import BIN, EXAMPLES, FIXTURES, oci_backend

SAMPLE = oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="sample")


# --- the socket ---------------------------------------------------------------------


def other_group():
    """A group to give the socket that is not our own primary group."""
    if os.geteuid() == 0:
        return 65534
    others = [g for g in os.getgroups() if g != os.getgid()]
    if not others:
        pytest.skip("not root and in no supplementary group: no other group to give the socket")
    return others[0]


def test_socket_is_0660_ours_with_the_configured_group_in_a_directory_others_cannot_write(serve):
    gid = other_group()
    s = serve(f'socket_group = "{gid}"\n' + SAMPLE)
    st = os.lstat(s.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == os.geteuid() and st.st_gid == gid
    assert stat.S_IMODE(os.stat(os.path.dirname(s.socket)).st_mode) & 0o002 == 0


@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_a_socket_directory_everyone_may_write_is_refused(workdir, mode):
    # Regression: imagelet served from /tmp-like directories, where anyone may plant the socket first.
    d = os.path.join(workdir, "shared")
    os.mkdir(d)
    os.chmod(d, mode)
    cfg = os.path.join(workdir, "c.toml")
    with open(cfg, "w") as f:
        f.write(f'socket = "{d}/imagelet.sock"\n' + SAMPLE)
    out = subprocess.run([BIN, "serve", "--config", cfg], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"{d} is writable by everyone" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert os.listdir(d) == []


def inet_sockets(pid):
    """(protocol, local address, state) of every inet socket the process holds, from /proc/net."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]$", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{proto}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    found.append((proto, fields[1], fields[3]))
    return inodes, found


def test_no_inet_socket_is_open(serve):
    s = serve(SAMPLE)
    assert s.image_status("edge-tools:2.0").HasField("image")
    inodes, inet = inet_sockets(s.proc.pid)
    assert inodes, "the server holds no socket at all: this check would prove nothing"
    assert inet == [], f"inet sockets (0A = LISTEN): {inet}"


# --- paths stay inside their store -------------------------------------------------------

IN_ACCESS, IN_OPEN = 0x1, 0x20


class Inotify:
    """Every open or read of a file in a directory (or of the directory itself), by any process."""

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, path.encode(), IN_ACCESS | IN_OPEN) >= 0

    def events(self):
        out = []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return out
        while data:
            _wd, mask, _cookie, length = struct.unpack("iIII", data[:16])
            name = data[16:16 + length].rstrip(b"\0").decode()
            out.append((name or ".", mask))
            data = data[16 + length:]
        return out

    def close(self):
        os.close(self.fd)


def escape(store_file, outside, name):
    """Moves a store file outside and leaves a symlink to it: the right content, reachable only by leaving the store."""
    target = os.path.join(outside, name)
    shutil.move(store_file, target)
    os.symlink(target, store_file)
    return store_file


def hostile_stores(workdir):
    """A store of each kind with one file that resolves outside it, and that outside directory."""
    stores, outside = os.path.join(workdir, "stores"), os.path.join(workdir, "outside")
    os.makedirs(outside)
    escapes = []
    oci = shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), os.path.join(stores, "oci"))
    with open(os.path.join(oci, "index.json")) as f:
        index = json.load(f)
    two = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "2.0")
    escapes.append(escape(os.path.join(oci, "blobs", "sha256", two["digest"][7:]), outside, "manifest"))
    # Digests that are paths are refused by the grammar before any path is made of them.
    index["manifests"] += [{**two, "digest": "sha256:../../../outside/manifest"}, {**two, "digest": "sha512:" + "../" * 42 + "ab"}]
    with open(os.path.join(oci, "index.json"), "w") as f:
        json.dump(index, f)
    archives = os.path.join(stores, "archives")
    os.makedirs(archives)
    shutil.copy(os.path.join(FIXTURES, "archives", "store", "hello-docker.tar"), os.path.join(archives, "escape.tar"))
    escapes.append(escape(os.path.join(archives, "escape.tar"), outside, "hello-docker.tar"))
    cs = shutil.copytree(os.path.join(FIXTURES, "containers-storage"), os.path.join(stores, "cs"), symlinks=True)
    with open(os.path.join(cs, "vfs-images", "images.json")) as f:
        image = next(i for i in json.load(f) if i.get("names") == ["example.com/edge/two:1.0"])
    config_file = "=" + base64.b64encode(f"sha256:{image['id']}".encode()).decode()
    escapes.append(escape(os.path.join(cs, "vfs-images", image["id"], config_file), outside, "cs-config"))
    docker = shutil.copytree(os.path.join(FIXTURES, "docker", "root"), os.path.join(stores, "docker"), symlinks=True)
    content = os.path.join(docker, "image", "vfs", "imagedb", "content", "sha256")
    escapes.append(escape(os.path.join(content, sorted(os.listdir(content))[0]), outside, "docker-config"))
    embedded = shutil.copytree(os.path.join(FIXTURES, "isulad", "embedded"), os.path.join(stores, "embedded"), symlinks=True)
    escapes.append(escape(os.path.join(embedded, "tools.manifest"), outside, "tools.manifest"))
    config = (oci_backend(oci, name="oci")
              + f'[[backend]]\ntype = "archives"\nname = "archives"\npath = "{archives}"\n'
              + f'[[backend]]\ntype = "containers-storage"\nname = "cs"\npath = "{cs}"\n'
              + f'[[backend]]\ntype = "docker"\nname = "docker"\npath = "{docker}"\n'
              + f'[[backend]]\ntype = "isulad"\nname = "isulad"\npath = "{os.path.join(FIXTURES, "isulad", "graph")}"\n'
              + f'embedded_manifests = "{embedded}"\n')
    return config, outside, escapes


def test_no_path_from_store_content_or_a_request_leaves_its_store(serve, workdir):
    config, outside, escapes = hostile_stores(workdir)
    watch = Inotify(outside)
    try:
        s = serve('log_level = "debug"\n' + config)
        images = s.list_images()
        assert len(images) > 5
        for image in images:
            s.image_status(image.id, verbose=True)
        for ref in ("../../outside/manifest", "sha256:../../../outside", "localhost/oci@sha256:" + "0" * 64,
                    "/" + outside + "/manifest", "file://" + outside):
            try:
                s.image_status(ref)
                s.list_images(ref)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        opened = watch.events()
        assert opened == [], f"files outside every store were opened or read: {opened}"
        log = s.log()
        for path in escapes:
            assert "outside the store" in log and path in log, path
        assert not s.image_status("localhost/oci:2.0").HasField("image")
        with open(os.path.join(outside, "manifest"), "rb") as f:  # the watch itself works: this open is seen
            f.read()
        assert watch.events()
    finally:
        watch.close()


# --- logs --------------------------------------------------------------------------------

MARKERS = ["MARKER-annotation-7f3a", "MARKER-user-image-19c2", "MARKER-handler-55d0", "MARKER-password-0b1e",
           "MARKER-auth-8c44", "MARKER-token-2f9d", "MARKER-unknown-field-a1b2"]
LOG_LINE = re.compile(r'^time=\S+ level=(debug|info|warn|error) msg="(?:[^"\\]|\\.)*"'
                      r'(?: [A-Za-z][A-Za-z0-9_]*=(?:[A-Za-z0-9_./:@+-]+|"(?:[^"\\]|\\.)*"))*$')
FORGED = 'level=error msg="forged"'


def hostile_archive(path):
    """A docker-archive whose tags are not references: they carry a forged log line and a terminal escape."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cid = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": cid + ".json", "RepoTags": [f"evil:1\n{FORGED}", "\x1b[2Jred:1", "ok.example/fine:1"], "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((cid + ".json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_logs_hold_no_payload_beyond_the_reference_and_escape_what_they_quote(serve, workdir):
    archives = os.path.join(workdir, "archives")
    os.makedirs(archives)
    hostile_archive(os.path.join(archives, "hostile.tar"))
    noisy = os.path.join(workdir, "noisy.sh")
    with open(noisy, "w") as f:
        f.write(f"#!/bin/sh\nprintf '\\033[2Jcleared\\n{FORGED}\\n' >&2\necho '{{\"protocol\":1,\"images\":[]}}'\n")
    os.chmod(noisy, 0o755)
    s = serve('log_level = "debug"\n' + SAMPLE + f'[[backend]]\ntype = "archives"\npath = "{archives}"\n'
              + f'[[backend]]\ntype = "exec"\nname = "noisy"\npath = "{noisy}"\n')
    pb = s.pb
    annotated = lambda ref: pb.ImageSpec(image=ref, annotations={"k": MARKERS[0]}, user_specified_image=MARKERS[1], runtime_handler=MARKERS[2])
    for ref in ("edge-tools:2.0", f"busybox\n{FORGED}", "\x1b[31mbusybox", "nothere:1", "../../etc/passwd", "a" * 5000):
        for call in (lambda: s.stub.ImageStatus(pb.ImageStatusRequest(image=annotated(ref), verbose=True), timeout=10),
                     lambda: s.stub.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=annotated(ref))), timeout=10),
                     lambda: s.stub.RemoveImage(pb.RemoveImageRequest(image=annotated(ref)), timeout=10)):
            try:
                call()
            except grpc.RpcError:
                pass
    auth = pb.AuthConfig(username="u", password=MARKERS[3], auth=MARKERS[4], identity_token=MARKERS[5], registry_token=MARKERS[5])
    with pytest.raises(grpc.RpcError):
        s.stub.PullImage(pb.PullImageRequest(image=annotated("busybox"), auth=auth), timeout=10)
    # Undecodable: a marker in an unknown field, then a truncated field.
    raw = s.channel.unary_unary("/runtime.v1.ImageService/ImageStatus", request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.RpcError):
        raw(soak_scenarios._pb_bytes(15, MARKERS[6].encode()) + b"\x0a\x05ab", timeout=10)
    s.stop()
    log = s.log()
    for marker in MARKERS:
        assert marker not in log, marker
    lines = log.splitlines()
    assert any("evil:1" in l for l in lines) and any("noisy" in l and "cleared" in l for l in lines), "the hostile names were not logged"
    for line in lines:
        if line.startswith("time="):
            assert LOG_LINE.match(line), line
            assert not re.search(r"[\x00-\x1f\x7f]", line), line
        else:  # only what the runtime itself prints may be free-form; never our forged line
            assert not line.startswith("level=") and "forged" not in line, line
