"""The mirror as one of serve()'s listeners: absent without [mirror], refused
when its address is taken, kept across SIGHUP (its view follows the reload),
stopped with the process; and the exec-plugin protocol's `content` method."""
import base64
import json
import os
import time
import socket
import subprocess

from conftest import BIN
from mirror_client import Mirror, OCI_MANIFEST, catalog_config, layer_tar, mirror_address, reload_with, sha256, wait_for, write_catalog


def tcp_listeners(pid):
    """How many TCP sockets the process listens on (/proc/net/tcp{,6}, state 0A)."""
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                count += fields[3] == "0A" and f"socket:[{fields[9]}]" in fds
    return count


def test_no_mirror_table_no_listener(serve, workdir):
    plugins, path, _ = write_catalog(workdir, [(["example.com/a:1"], [{"f": b"x"}])])
    without = serve(catalog_config(plugins, path).replace('[mirror]\nlisten = "127.0.0.1:0"\n', ""), subdir="without")
    assert len(without.list_images()) == 1
    assert "registry mirror" not in without.log()
    assert tcp_listeners(without.proc.pid) == 0
    with_mirror = serve(catalog_config(plugins, path), subdir="with")
    assert tcp_listeners(with_mirror.proc.pid) == 1


def test_an_address_in_use_stops_the_start_with_one_line(workdir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        plugins, path, _ = write_catalog(workdir, [(["example.com/a:1"], [{"f": b"x"}])])
        config = os.path.join(workdir, "imagelet.toml")
        with open(config, "w") as f:
            f.write(f'socket = "{workdir}/run/imagelet.sock"\n' + catalog_config(plugins, path, listen=f"127.0.0.1:{port}"))
        out = subprocess.run([BIN, "serve", "--config", config], capture_output=True, text=True, timeout=20)
    finally:
        taken.close()
    # A configuration that cannot work: 2, which the shipped unit does not restart (RestartPreventExitStatus=2).
    assert out.returncode == 2, out.stderr
    assert f'imagelet: [mirror] listen = "127.0.0.1:{port}": cannot listen' in out.stderr
    assert not os.path.exists(f"{workdir}/run/imagelet.sock")


def test_reload_keeps_the_listener_and_serves_the_new_view(serve, workdir):
    plugins, path, (image,) = write_catalog(workdir, [(["example.com/a:1"], [{"f": b"x"}])])
    s = serve(catalog_config(plugins, path))
    m = Mirror(s)
    assert m.get("/v2/example.com/a/manifests/1")[0] == 200
    # A new tag, and a new listen address asked for: the tag is served at once, the address at the next start.
    _, _, (again,) = write_catalog(workdir, [(["example.com/a:2"], [{"f": b"x"}])])
    reload_with(s, 'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:1"')
    assert 'msg="changed setting takes effect at the next start" key=mirror.listen' in s.log()
    assert wait_for(lambda: m.get("/v2/example.com/a/manifests/2")[0] == 200)
    assert m.get("/v2/example.com/a/manifests/1")[0] == 404


def test_stop_closes_the_mirror_port(serve, workdir):
    plugins, path, _ = write_catalog(workdir, [(["example.com/a:1"], [{"f": b"x"}])])
    s = serve(catalog_config(plugins, path))
    host, port = mirror_address(s)
    assert s.stop() == 0
    try:
        socket.create_connection((host, port), timeout=1).close()
        connected = True
    except OSError:
        connected = False
    assert not connected


EXEC_PLUGIN = """#!/usr/bin/env python3
# An exec plugin serving one image: the manifest as base64 bytes, the config and layer as file regions of one pack file.
import base64, json, sys
request = json.loads(sys.stdin.readline())
with open(sys.argv[1]) as f:
    store = json.load(f)
if request["method"] == "list":
    print(json.dumps({"protocol": 1, "images": [store["record"]]}))
elif request["method"] == "content":
    print(json.dumps({"protocol": 1, "content": store["content"].get(request["digest"]) if request["id"] == store["record"]["id"] else None}))
else:
    print(json.dumps({"protocol": 1, "image": None}))
"""


def test_exec_plugin_content_file_regions_and_bytes(serve, workdir):
    layer = layer_tar({"hello": b"hello from exec\n"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    pack = os.path.join(workdir, "pack.bin")
    with open(pack, "wb") as f:
        f.write(b"HEADER" + config + layer + b"TRAILER")
    store = {
        "record": {"id": sha256(config), "repoTags": ["example.com/exec/app:1"], "repoDigests": [], "size": len(layer), "kind": "oci",
                   "target": {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}},
        "content": {
            sha256(manifest): {"mediaType": OCI_MANIFEST, "size": len(manifest), "bytes": base64.b64encode(manifest).decode()},
            sha256(config): {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "path": pack, "offset": 6},
            sha256(layer): {"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer), "path": pack, "offset": 6 + len(config)},
        },
    }
    store_path = os.path.join(workdir, "store.json")
    with open(store_path, "w") as f:
        json.dump(store, f)
    plugin = os.path.join(workdir, "exec-store.py")
    with open(plugin, "w") as f:
        f.write(EXEC_PLUGIN)
    os.chmod(plugin, 0o755)
    s = serve(f'[mirror]\nlisten = "127.0.0.1:0"\n[[backend]]\ntype = "exec"\nname = "exec-store"\npath = "{plugin}"\nargs = ["{store_path}"]\n')
    m = Mirror(s)
    status, headers, body = m.get("/v2/example.com/exec/app/manifests/1")
    assert status == 200 and body == manifest and headers["docker-content-digest"] == sha256(manifest)
    status, _, body = m.get(f"/v2/example.com/exec/app/blobs/{sha256(config)}")
    assert status == 200 and body == config
    status, headers, body = m.get(f"/v2/example.com/exec/app/blobs/{sha256(layer)}", Range="bytes=10-19")
    assert status == 206 and body == layer[10:20]
    assert m.get(f"/v2/example.com/exec/app/blobs/{sha256(b'nothing')}")[0] == 404


def test_stop_gives_a_download_in_flight_a_grace_then_cuts_it(serve, workdir):
    import http.client

    from mirror_client import install_test_plugins, streamed_layer, streamer_config

    plugins = install_test_plugins(workdir)
    # 32 chunks × 0.3 s: longer than the 5 s the stop allows.
    s = serve(streamer_config(plugins, delay=300, chunk=32768))
    m = Mirror(s)
    layer = streamed_layer(1048576)
    conn = http.client.HTTPConnection(m.host, m.port, timeout=20)
    conn.request("GET", f"/v2/example.com/stream/app/blobs/{sha256(layer)}")
    r = conn.getresponse()
    got = r.read(65536)
    started = time.time()
    s.proc.send_signal(15)
    try:
        got += r.read()
        cut = False
    except (http.client.IncompleteRead, ConnectionError):
        cut = True
    conn.close()
    assert cut and len(got) < len(layer)
    assert s.proc.wait(timeout=15) == 0
    assert 4 < time.time() - started < 10


def test_a_store_change_is_served_as_soon_as_it_is_listed(serve, workdir):
    plugins, path, _ = write_catalog(workdir, [(["example.com/a:1"], [{"f": b"x"}])])
    s = serve(catalog_config(plugins, path))
    m = Mirror(s)
    assert m.get("/v2/example.com/a/manifests/1")[0] == 200
    write_catalog(workdir, [(["example.com/a:2"], [{"f": b"y"}])])
    assert wait_for(lambda: m.get("/v2/example.com/a/manifests/2")[0] == 200)
    assert [t for i in s.list_images() for t in i.repo_tags] == ["example.com/a:2"]
    assert m.get("/v2/example.com/a/manifests/1")[0] == 404
