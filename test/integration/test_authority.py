"""Clients that send the socket path as `:authority` (kubelet and crictl before
v1.30: grpc-go dialling a unix socket path), and socket activation.

The client is python3-grpcio with `grpc.default_authority` set to the socket
path, which is what those grpc-go versions put on the wire. A control shows
that this client really sends the path: a plain Node HTTP/2 server (the same
check Bun's server makes) resets its streams.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import grpc
import pytest

import cri_stubs
from conftest import BIN, EXAMPLES, oci_backend

SAMPLE = os.path.join(EXAMPLES, "sample-oci")
NODE = shutil.which("node") or "node"  # always there: the project builds with npm

# A plain Node HTTP/2 server: no handler can run for a stream whose
# `:authority` is a path, because the session resets it first.
PLAIN_H2_SERVER = r"""
const http2 = require("node:http2");
const s = http2.createServer();
s.on("stream", (stream) => {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "12" }));
  stream.end();
});
s.listen(process.argv[1], () => console.log("listening"));
"""


def channel(path, authority=None):
    options = [("grpc.default_authority", authority)] if authority else []
    return grpc.insecure_channel(f"unix:{path}", options=options)


def calls(pb, stub, metadata=None):
    """One round of the calls kubelet makes, as comparable bytes."""
    out = [stub.ListImages(pb.ListImagesRequest(), timeout=10, metadata=metadata).SerializeToString()]
    for ref in ("example.com/edge/hello:1.0", "edge-tools:2.0", "missing:1"):
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True)
        out.append(stub.ImageStatus(req, timeout=10, metadata=metadata).SerializeToString())
    out.extend(r.SerializeToString() for r in stub.StreamImages(pb.StreamImagesRequest(), timeout=10, metadata=metadata))
    return out


def test_control_the_client_really_sends_the_path(workdir):
    sock = os.path.join(workdir, "plain.sock")
    proc = subprocess.Popen([NODE, "-e", PLAIN_H2_SERVER, sock], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "listening"
        pb, pbg = cri_stubs.load()
        with channel(sock) as ok:
            with pytest.raises(grpc.RpcError) as err:
                pbg.ImageServiceStub(ok).ListImages(pb.ListImagesRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # reached the handler
        with channel(sock, authority=sock) as bad:
            with pytest.raises(grpc.RpcError) as err:
                pbg.ImageServiceStub(bad).ListImages(pb.ListImagesRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "RST_STREAM" in err.value.details()
    finally:
        proc.kill()
        proc.wait()


def test_path_authority_gets_the_same_answers_on_every_call(serve):
    s = serve('log_level = "debug"\n' + oci_backend(SAMPLE))
    pb, pbg = cri_stubs.load()
    reference = calls(pb, s.stub)
    assert len(reference) >= 5
    # One long-lived connection: grpc's HPACK encoder indexes `:authority`,
    # `:path`, `user-agent` and the rest on the first call, so later calls
    # refer to dynamic-table entries the first call added.
    with channel(s.socket, authority=s.socket) as old_client:
        stub = pbg.ImageServiceStub(old_client)
        for i in range(20):
            # Every 5th call carries 40 KiB of metadata: a header block over
            # the 16 KiB frame limit, so it arrives as HEADERS + CONTINUATIONs
            # (and its fields enter the dynamic table for the calls after it).
            metadata = [("x-padding", f"{i}-" + "a" * 40000)] if i % 5 == 2 else [("x-call", str(i))]
            assert calls(pb, stub, metadata) == reference, f"call round {i}"
    assert "closing client connection" not in s.log()
    assert s.log().count("header blocks rewritten") == 1  # the one old-client connection


def test_path_authority_on_v1alpha2(serve):
    s = serve(oci_backend(SAMPLE))
    pb, pbg = cri_stubs.load("v1alpha2")
    with channel(s.socket) as new_client, channel(s.socket, authority=s.socket) as old_client:
        want = pbg.ImageServiceStub(new_client).ListImages(pb.ListImagesRequest(), timeout=10)
        for _ in range(3):
            got = pbg.ImageServiceStub(old_client).ListImages(pb.ListImagesRequest(), timeout=10)
            assert got.SerializeToString() == want.SerializeToString()
            assert len(got.images) == 2


def test_many_old_and_new_clients_at_once(serve):
    s = serve(oci_backend(SAMPLE))
    pb, pbg = cri_stubs.load()
    reference = calls(pb, s.stub)
    channels = [channel(s.socket, authority=s.socket if i % 2 else None) for i in range(8)]
    try:
        futures = []
        for ch in channels:
            stub = pbg.ImageServiceStub(ch)
            futures += [stub.ListImages.future(pb.ListImagesRequest(), timeout=20) for _ in range(10)]
        assert {f.result().SerializeToString() for f in futures} == {reference[0]}
    finally:
        for ch in channels:
            ch.close()


def start_socket_activated(workdir, config_text):
    """Starts the binary the way systemd does: a bound, listening socket as fd 3,
    LISTEN_FDS=1 and LISTEN_PID set to the binary's own pid (bash's $$ survives exec; bash, not dash, for fds over 9)."""
    path = os.path.join(workdir, "activated.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    os.chmod(path, 0o660)
    listening.listen(64)
    # The client that makes systemd start the service connects before the
    # service exists: it sits in the listen queue until imagelet accepts.
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.connect(path)
    early.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    config = os.path.join(workdir, "imagelet.toml")
    with open(config, "w") as f:
        # The configured path is not the activated one: the inherited socket wins.
        f.write(f'socket = "{os.path.join(workdir, "configured.sock")}"\n' + config_text)
    log_path = os.path.join(workdir, "activated.log")
    log = open(log_path, "w")
    fd = listening.fileno()
    proc = subprocess.Popen(
        ["bash", "-c", f'exec 3<&{fd}; [ {fd} = 3 ] || exec {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', BIN, "serve", "--config", config],
        pass_fds=[fd],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return path, listening, proc, log_path, early


def test_socket_activation_serves_the_inherited_socket(workdir):
    path, listening, proc, log_path, early = start_socket_activated(workdir, oci_backend(SAMPLE))
    try:
        # The queued client is served: the server's first frame is its SETTINGS.
        early.settimeout(20)
        frame = early.recv(9)
        assert len(frame) == 9 and frame[3] == 0x4, frame
        early.close()
        pb, pbg = cri_stubs.load()
        # A client may connect before imagelet accepts: the kernel queues it on
        # the listening socket, as systemd's does while the service starts.
        with channel(path, authority=path) as ch:
            images = pbg.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=30, wait_for_ready=True).images
        assert len(images) == 2
        with open(log_path) as f:
            assert "systemd socket activation" in f.read()
        assert not os.path.exists(os.path.join(workdir, "configured.sock"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        # The socket is systemd's: it outlives the service, and a client that
        # connects now is queued for the next start instead of refused.
        assert os.path.exists(path)
        queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        queued.connect(path)
        queued.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listening.close()


def test_listen_pid_of_another_process_is_ignored(workdir):
    """LISTEN_FDS meant for a parent (LISTEN_PID not ours) must not be taken: imagelet binds its own path."""
    config = os.path.join(workdir, "imagelet.toml")
    sock = os.path.join(workdir, "own.sock")
    with open(config, "w") as f:
        f.write(f'socket = "{sock}"\n' + oci_backend(SAMPLE))
    env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
    proc = subprocess.Popen([BIN, "serve", "--config", config], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        pb, pbg = cri_stubs.load()
        with channel(sock) as ch:
            assert len(pbg.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=10).images) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_started_by_systemd_socket_activate(workdir):
    """systemd's own tool (package systemd): it binds the socket, waits for the
    first client, then starts the binary with the socket as fd 3 and LISTEN_*."""
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate missing: apt-get install systemd"
    path = os.path.join(workdir, "sd.sock")
    config = os.path.join(workdir, "imagelet.toml")
    with open(config, "w") as f:
        f.write(f'socket = "{os.path.join(workdir, "configured.sock")}"\n' + oci_backend(SAMPLE))
    proc = subprocess.Popen([tool, "-l", path, BIN, "serve", "--config", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 20
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        pb, pbg = cri_stubs.load()
        # The first client is what starts imagelet; it is answered by it.
        with channel(path, authority=path) as ch:
            stub = pbg.ImageServiceStub(ch)
            assert len(stub.ListImages(pb.ListImagesRequest(), timeout=30, wait_for_ready=True).images) == 2
            status = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="edge-tools:2.0")), timeout=10)
            assert status.image.repo_tags == ["docker.io/library/edge-tools:2.0"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert "systemd socket activation" in out, out
    assert not os.path.exists(os.path.join(workdir, "configured.sock"))


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name, value):
    """A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2); lengths < 127."""
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def read_frame(sock):
    head = b""
    while len(head) < 9:
        more = sock.recv(9 - len(head))
        assert more, "connection closed"
        head += more
    length = int.from_bytes(head[:3], "big")
    payload = b""
    while len(payload) < length:
        more = sock.recv(length - len(payload))
        assert more, "connection closed"
        payload += more
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload


def grpc_go_style_list_images(path, authority):
    """An HTTP/2 client that behaves as grpc-go does: it sends its preface and
    SETTINGS, and its first request only after the server's SETTINGS arrived."""
    pb, _ = cri_stubs.load()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    try:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(0x4, 0, 0))
        kind, flags, _, _ = read_frame(s)
        assert (kind, flags) == (0x4, 0), "the server's preface is a SETTINGS frame"
        block = b"".join(
            hpack_literal(n, v)
            for n, v in [(":method", "POST"), (":scheme", "http"), (":path", "/runtime.v1.ImageService/ListImages"),
                         (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
        )
        message = pb.ListImagesRequest().SerializeToString()
        s.sendall(h2_frame(0x4, 0x1, 0) + h2_frame(0x1, 0x4, 1, block) + h2_frame(0x0, 0x1, 1, b"\x00" + len(message).to_bytes(4, "big") + message))
        data = b""
        while True:
            kind, flags, stream, payload = read_frame(s)
            if kind == 0x4 and not flags & 0x1:
                s.sendall(h2_frame(0x4, 0x1, 0))  # acknowledge the server's own SETTINGS
            assert kind != 0x3, f"stream reset: error code {int.from_bytes(payload, 'big')}"
            assert kind != 0x7, "connection closed by GOAWAY"
            if kind == 0x0 and stream == 1:
                data += payload
            if stream == 1 and flags & 0x1:  # END_STREAM: trailers (or the last DATA)
                break
        return pb.ListImagesResponse.FromString(data[5:])
    finally:
        s.close()


def test_grpc_go_style_client_waiting_for_the_server_preface(serve):
    """Both ways through the connection hand-over: a host `:authority` goes to the
    server as sent, a socket path through the rewriter (the debug log says which)."""
    s = serve("log_level = \"debug\"\n" + oci_backend(SAMPLE))
    want = s.list_images()
    assert "header blocks rewritten" not in s.log()  # grpcio sent localhost: as sent
    for authority in ("localhost", s.socket):
        got = grpc_go_style_list_images(s.socket, authority)
        assert [i.SerializeToString() for i in got.images] == [i.SerializeToString() for i in want]
    time.sleep(0.2)
    assert s.log().count("header blocks rewritten") == 1
