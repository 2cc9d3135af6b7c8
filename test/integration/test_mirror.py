"""The registry mirror ([mirror]): the distribution-spec pull API served from
imagelet's stores, called over TCP with Python's http.client (no code shared
with the server). Stores: plugins/catalog, the example plugin with the
content hook (file and bytes bodies), and test plugins (mirror_client.py)
whose layer is made as it is sent, to fail in every way a body can."""
import http.client
import json
import os
import socket
import time

import pytest

from mirror_client import (
    Mirror, OCI_MANIFEST, catalog_config, install_test_plugins, reload_with, sha256, streamed_layer, streamer_config, wait_for,
    write_catalog,
)
from conftest import run_cli

BUSYBOX = "docker.io/library/busybox:1.36"
APP = "quay.io/org/app:1.0"


def error_of(body):
    errors = json.loads(body)["errors"]
    assert len(errors) == 1 and set(errors[0]) == {"code", "message", "detail"}
    return errors[0]


@pytest.fixture
def catalog(serve, workdir):
    """busybox and app from the catalog plugin: (server, Mirror, {tag: CatalogImage})."""
    plugins, path, images = write_catalog(workdir, [
        ([BUSYBOX, "docker.io/library/busybox:latest"], [{"bin/busybox": b"\x7fELF busybox\n" * 100}, {"etc/motd": b"hi\n"}]),
        ([APP, "quay.io/org/app:1.1", "quay.io/org/app:2.0"], [{"app": b"app\n"}]),
    ])
    s = serve(catalog_config(plugins, path))
    return s, Mirror(s), {BUSYBOX: images[0], APP: images[1]}


def test_base_answers_200_with_the_api_version(catalog):
    _, m, _ = catalog
    for path in ("/v2/", "/v2"):
        status, headers, body = m.get(path)
        assert status == 200 and body == b"{}"
        assert headers["docker-distribution-api-version"] == "registry/2.0"
        assert headers["content-type"].startswith("application/json")


def test_three_name_forms_reach_the_same_image(catalog):
    _, m, images = catalog
    busybox = images[BUSYBOX]
    for path in (
        "/v2/library/busybox/manifests/1.36?ns=docker.io",  # containerd's hosts.toml mirror
        "/v2/library/busybox/manifests/1.36?ns=registry-1.docker.io",
        "/v2/docker.io/library/busybox/manifests/1.36",  # CRI-O / podman: location = "host:port/docker.io"
        "/v2/library/busybox/manifests/1.36",  # Docker's registry-mirrors: a bare path is Docker Hub
        "/v2/busybox/manifests/1.36?ns=docker.io",
    ):
        status, headers, body = m.get(path)
        assert status == 200, (path, body)
        assert body == busybox.manifest and headers["docker-content-digest"] == busybox.manifest_digest, path
    app = images[APP]
    for path in ("/v2/org/app/manifests/1.0?ns=quay.io", "/v2/quay.io/org/app/manifests/1.0"):
        status, _, body = m.get(path)
        assert status == 200 and body == app.manifest, path
    # Without ns or a registry component, org/app is Docker Hub's, which has none.
    status, _, body = m.get("/v2/org/app/manifests/1.0")
    assert status == 404 and error_of(body)["code"] == "NAME_UNKNOWN"


def test_manifest_by_tag_and_by_digest_head_and_get_alike(catalog):
    _, m, images = catalog
    busybox = images[BUSYBOX]
    for ref in ("1.36", "latest", busybox.manifest_digest):
        path = f"/v2/library/busybox/manifests/{ref}?ns=docker.io"
        get_status, get_headers, body = m.get(path)
        head_status, head_headers, head_body = m.head(path)
        assert get_status == head_status == 200 and head_body == b""
        assert body == busybox.manifest
        for h in ("content-type", "content-length", "docker-content-digest"):
            assert get_headers[h] == head_headers[h], h
        assert get_headers["content-type"] == OCI_MANIFEST
        assert get_headers["content-length"] == str(len(busybox.manifest))
        assert get_headers["docker-content-digest"] == busybox.manifest_digest


def test_blobs_config_and_layers_head_and_get_alike(catalog):
    _, m, images = catalog
    busybox = images[BUSYBOX]
    for blob in (busybox.config, *busybox.layers):
        path = f"/v2/library/busybox/blobs/{sha256(blob)}?ns=docker.io"
        status, headers, body = m.get(path)
        head_status, head_headers, head_body = m.head(path)
        assert status == head_status == 200 and body == blob and head_body == b""
        for h in ("content-type", "content-length", "docker-content-digest", "accept-ranges"):
            assert headers[h] == head_headers[h], h
        assert headers["content-length"] == str(len(blob)) and headers["docker-content-digest"] == sha256(blob)
        assert headers["accept-ranges"] == "bytes"
        # Not the store file's name (Bun would add it for a file body).
        assert "filename" not in headers.get("content-disposition", "")


def test_manifests_route_answers_only_manifests(catalog):
    _, m, images = catalog
    status, _, body = m.get(f"/v2/library/busybox/manifests/{images[BUSYBOX].id}?ns=docker.io")
    assert status == 404 and error_of(body)["code"] == "MANIFEST_UNKNOWN"
    # The blobs route serves anything reachable, the manifest too.
    status, _, body = m.get(f"/v2/library/busybox/blobs/{images[BUSYBOX].manifest_digest}?ns=docker.io")
    assert status == 200 and body == images[BUSYBOX].manifest


def test_ranges(catalog):
    _, m, images = catalog
    layer = images[BUSYBOX].layers[0]
    size = len(layer)
    path = f"/v2/library/busybox/blobs/{sha256(layer)}"
    for header, (start, end) in (("bytes=0-99", (0, 99)), ("bytes=100-", (100, size - 1)), ("bytes=-10", (size - 10, size - 1)), (f"bytes=5-{size + 50}", (5, size - 1))):
        status, headers, body = m.get(path, Range=header)
        assert status == 206, header
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert headers["content-length"] == str(end - start + 1)
        assert body == layer[start:end + 1]
        assert headers["docker-content-digest"] == sha256(layer)
    status, headers, body = m.get(path, Range=f"bytes={size}-")
    assert status == 416 and headers["content-range"] == f"bytes */{size}"
    # Several ranges: the whole blob, 200 (containers/image splits it itself).
    status, headers, body = m.get(path, Range="bytes=0-1,5-9")
    assert status == 200 and body == layer
    # Manifests are sent whole.
    status, _, body = m.get("/v2/library/busybox/manifests/1.36", Range="bytes=0-3")
    assert status == 200 and body == images[BUSYBOX].manifest
    # HEAD ignores Range.
    status, headers, _ = m.head(path, Range="bytes=0-3")
    assert status == 200 and headers["content-length"] == str(size)


def test_tags_list_with_paging(catalog):
    _, m, _ = catalog
    status, headers, body = m.get("/v2/quay.io/org/app/tags/list")
    assert status == 200 and json.loads(body) == {"name": "quay.io/org/app", "tags": ["1.0", "1.1", "2.0"]}
    status, headers, body = m.get("/v2/org/app/tags/list?ns=quay.io&n=2")
    assert json.loads(body) == {"name": "org/app", "tags": ["1.0", "1.1"]}
    assert headers["link"] == '</v2/org/app/tags/list?n=2&last=1.1&ns=quay.io>; rel="next"'
    status, headers, body = m.get("/v2/org/app/tags/list?ns=quay.io&n=2&last=1.1")
    assert json.loads(body)["tags"] == ["2.0"] and "link" not in headers
    status, _, body = m.get("/v2/quay.io/org/app/tags/list?last=2.0")
    assert json.loads(body)["tags"] == []
    status, _, body = m.get("/v2/quay.io/org/app/tags/list?n=-1")
    assert status == 400 and error_of(body)["code"] == "PAGINATION_NUMBER_INVALID"
    status, _, body = m.get("/v2/quay.io/org/nothing/tags/list")
    assert status == 404 and error_of(body)["code"] == "NAME_UNKNOWN"


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
def test_writes_are_405_unsupported_and_change_nothing(catalog, method):
    s, m, images = catalog
    before = sorted(t for i in s.list_images() for t in i.repo_tags)
    for path in ("/v2/library/busybox/manifests/1.36", f"/v2/library/busybox/blobs/{images[BUSYBOX].id}", "/v2/library/busybox/blobs/uploads/"):
        status, headers, body = m.request(method, path, {"Content-Length": "0"})
        assert status == 405, path
        assert error_of(body)["code"] == "UNSUPPORTED" and headers["allow"] == "GET, HEAD"
    assert sorted(t for i in s.list_images() for t in i.repo_tags) == before
    assert m.get("/v2/library/busybox/manifests/1.36")[0] == 200


def test_absent_things_are_404_with_the_spec_json(catalog):
    _, m, images = catalog
    cases = {
        "/v2/library/busybox/manifests/9.9": "MANIFEST_UNKNOWN",
        f"/v2/library/busybox/manifests/sha256:{'0' * 64}": "MANIFEST_UNKNOWN",
        f"/v2/library/busybox/blobs/sha256:{'0' * 64}": "BLOB_UNKNOWN",
        "/v2/library/nothing/manifests/1": "NAME_UNKNOWN",
        f"/v2/library/nothing/blobs/sha256:{'0' * 64}": "NAME_UNKNOWN",
        "/v2/_catalog": "NOT_FOUND",
        f"/v2/library/busybox/referrers/{images[BUSYBOX].manifest_digest}": "NOT_FOUND",
        "/": "NOT_FOUND",
    }
    for path, code in cases.items():
        for method in ("GET", "HEAD"):
            status, headers, body = m.request(method, path)
            assert status == 404, path
            assert headers["content-type"].startswith("application/json")
            if method == "GET":
                assert error_of(body)["code"] == code, path
                assert headers["content-length"] == str(len(body))


def test_only_content_reachable_from_the_repository_is_served(catalog):
    _, m, images = catalog
    # app's layer exists in the store, but not in busybox's repository.
    app_layer = sha256(images[APP].layers[0])
    assert m.get(f"/v2/quay.io/org/app/blobs/{app_layer}")[0] == 200
    status, _, body = m.get(f"/v2/library/busybox/blobs/{app_layer}?ns=docker.io")
    assert status == 404 and error_of(body)["code"] == "BLOB_UNKNOWN"
    status, _, _ = m.get(f"/v2/library/busybox/manifests/{images[APP].manifest_digest}")
    assert status == 404


TRAVERSALS = [
    "/v2/library/busybox/blobs/..%2f..%2f..%2fetc%2fpasswd",
    "/v2/library/busybox/blobs/sha256:..%2f..%2fetc%2fpasswd",
    "/v2/library/busybox/blobs/sha256%3a" + "ab" * 32,
    "/v2/library%2fbusybox/manifests/1.36",
    "/v2/library/busybox/manifests/..%2f..%2f1.36",
    "/v2/%2e%2e/%2e%2e/etc/blobs/sha256:" + "ab" * 32,
    "/v2/library/busybox/blobs/sha256:" + "AB" * 32,
    "/v2/library/busybox/blobs/sha256:" + "ab" * 31,
    "/v2/library/busybox/blobs/sha256:" + "ab" * 32 + "00",
    "/v2/library/busybox/blobs/md5:" + "ab" * 16,
    "/v2/library/busybox/blobs/sha256:" + "ab" * 31 + "zz",
    "/v2/library/busybox/blobs/%00",
    "/v2/library/busybox/manifests/1.36%00",
    "/v2/library/busybox/manifests/1.36?ns=..%2f..",
    "/v2/library/busybox/manifests/1.36?ns=docker.io%2f..",
    "/v2/../../../etc/passwd",
    "/v2/library/busybox/../../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_encoded_and_malformed_paths_never_reach_a_file(catalog, path):
    _, m, _ = catalog
    status, headers, body = m.get(path)
    assert status in (400, 404), (path, status)
    assert b"root:" not in body
    assert error_of(body)["code"] in ("NAME_INVALID", "DIGEST_INVALID", "TAG_INVALID", "NOT_FOUND", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


# --- bodies made as they are sent (the `open` hook) ---------------------------

def stream_server(serve, workdir, **options):
    plugins = install_test_plugins(workdir)
    s = serve(streamer_config(plugins, **options))
    return s, Mirror(s)


LAYER_SIZE = 1048576


def test_open_body_is_streamed_and_verified(serve, workdir):
    s, m = stream_server(serve, workdir)
    layer = streamed_layer(LAYER_SIZE)
    status, headers, body = m.get(f"/v2/example.com/stream/app/blobs/{sha256(layer)}")
    assert status == 200 and body == layer and headers["docker-content-digest"] == sha256(layer)
    # Bun 1.4 sends a stream chunked, without the Content-Length set for it (oven-sh/bun#10507); HEAD has it.
    assert headers.get("content-length", str(LAYER_SIZE)) == str(LAYER_SIZE)
    assert m.head(f"/v2/example.com/stream/app/blobs/{sha256(layer)}")[1]["content-length"] == str(LAYER_SIZE)
    # A part of it: the body from `start`, cut at `end`.
    status, headers, body = m.get(f"/v2/example.com/stream/app/blobs/{sha256(layer)}", Range="bytes=100000-300000")
    assert status == 206 and body == layer[100000:300001]


def raw_get(m, path):
    """GET, reading the body to its end or until the connection breaks: (status, headers, bytes read, error)."""
    conn = http.client.HTTPConnection(m.host, m.port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        got = b""
        try:
            while True:
                chunk = r.read(65536)
                if not chunk:
                    break
                got += chunk
            headers = dict(r.getheaders())
            # http.client's read(amt) ends quietly at a close before Content-Length; every client calls it truncated.
            length = {k.lower(): v for k, v in headers.items()}.get("content-length")
            if length is not None and len(got) < int(length):
                return r.status, headers, got, http.client.IncompleteRead(got, int(length) - len(got))
            return r.status, headers, got, None
        except (http.client.IncompleteRead, ConnectionError) as e:
            return r.status, dict(r.getheaders()), got, e
    except (http.client.RemoteDisconnected, ConnectionError) as e:
        return None, {}, b"", e
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["fail", "wrong", "short", "long"])
def test_a_body_that_fails_midway_aborts_the_connection(serve, workdir, mode):
    s, m = stream_server(serve, workdir, mode=mode)
    layer = streamed_layer(LAYER_SIZE)
    status, headers, got, error = raw_get(m, f"/v2/example.com/stream/app/blobs/{sha256(layer)}")
    # Never a clean end with the bytes the client would check.
    assert error is not None, (mode, status, len(got))
    assert len(got) < LAYER_SIZE
    assert got == layer[:len(got)]  # what was sent was right as far as it went
    assert wait_for(lambda: 'msg="mirror: body failed mid-way; connection aborted"' in s.log())
    # The service is still up, and the next request is answered.
    assert m.get("/v2/")[0] == 200
    assert len(s.list_images()) == 3


def test_bytes_that_do_not_hash_to_the_digest_are_refused_before_any_header(serve, workdir):
    s, m = stream_server(serve, workdir, mode="badbytes")
    status, _, body = m.get("/v2/example.com/stream/app/manifests/1")
    assert status == 404 and error_of(body)["code"] == "MANIFEST_UNKNOWN"
    assert "hash to" in error_of(body)["message"]
    assert "backend=streamer" in s.log()


def test_embedded_images_are_never_served_and_a_backend_without_the_hook_is_named(serve, workdir):
    s, m = stream_server(serve, workdir)
    status, _, body = m.get("/v2/example.com/stream/embedded/manifests/1")
    assert status == 404 and "embedded" in error_of(body)["message"]
    status, _, body = m.get("/v2/example.com/nohook/app/manifests/1")
    assert status == 404
    message = error_of(body)["message"]
    assert '"nohook"' in message and "this store keeps no layers" in message
    # Neither is listed among the tags the mirror serves.
    for repository in ("example.com/stream/embedded", "example.com/nohook/app"):
        status, _, body = m.get(f"/v2/{repository}/tags/list")
        assert status == 200 and json.loads(body)["tags"] == [], repository


def test_plugins_shows_whether_the_mirror_serves_each_backend(serve, workdir):
    s, _ = stream_server(serve, workdir)
    out = run_cli("plugins", "--endpoint", f"unix://{s.socket}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "TYPE", "STATE", "IMAGES", "MIRROR"]
    rows = {l.split()[0]: l for l in lines[1:]}
    assert rows["streamer"].split()[3:7] == ["2", "1", "of", "2"]  # the embedded image is not served
    assert rows["nohook"].split()[3:5] == ["1", "no"]
    out = run_cli("plugins", "--endpoint", f"unix://{s.socket}", "-o", "json")
    backends = {b["name"]: b for b in json.loads(out.stdout)["backends"]}
    assert backends["streamer"]["mirror"] is True and backends["nohook"]["mirror"] is False


def test_reload_during_a_download_finishes_it_on_the_old_store(serve, workdir):
    s, m = stream_server(serve, workdir, delay=25, chunk=32768, generation="1")
    layer = streamed_layer(LAYER_SIZE, "1")
    conn = http.client.HTTPConnection(m.host, m.port, timeout=20)
    try:
        conn.request("GET", f"/v2/example.com/stream/app/blobs/{sha256(layer)}")
        r = conn.getresponse()
        assert r.status == 200
        first = r.read(200000)
        # A new configuration: the store is created anew, and the old one closed...
        reload_with(s, 'generation = "1"', 'generation = "2"')
        # ...but not while this download still reads from it.
        assert "streamer closed" not in s.log()
        new_layer = streamed_layer(LAYER_SIZE, "2")
        assert m.get(f"/v2/example.com/stream/app/blobs/{sha256(new_layer)}", Range="bytes=0-9")[0] == 206
        rest = r.read()
    finally:
        conn.close()
    assert first + rest == layer
    assert wait_for(lambda: 'msg="streamer closed" backend=streamer generation=1' in s.log()), s.log()
    # The old bytes are gone from the new view.
    assert m.get(f"/v2/example.com/stream/app/blobs/{sha256(layer)}")[0] == 404


def test_a_client_that_vanishes_mid_blob_releases_the_store(serve, workdir):
    # The whole layer would take 32 × 0.3 s: the store must be let go when the client leaves, not when the layer would end.
    s, m = stream_server(serve, workdir, delay=300, chunk=32768, generation="1")
    layer = streamed_layer(LAYER_SIZE, "1")
    conn = http.client.HTTPConnection(m.host, m.port, timeout=10)
    conn.request("GET", f"/v2/example.com/stream/app/blobs/{sha256(layer)}")
    r = conn.getresponse()
    r.read(100000)
    conn.sock.close()
    conn.close()
    reload_with(s, 'generation = "1"', 'generation = "2"')
    # The old store is closed once the abandoned response is let go, long before the layer would have ended.
    started = time.time()
    assert wait_for(lambda: 'msg="streamer closed" backend=streamer generation=1' in s.log(), timeout=5), s.log()
    assert time.time() - started < 4
    assert "body failed mid-way" not in s.log()  # a client leaving is not the store failing


def test_a_built_in_store_through_the_mirror_byte_for_byte(serve):
    """examples/sample-oci through the oci-layout backend's content hook: the stored manifest and blobs as they are."""
    from conftest import EXAMPLES, oci_backend

    layout = os.path.join(EXAMPLES, "sample-oci")
    s = serve('[mirror]\nlisten = "127.0.0.1:0"\n' + oci_backend(layout, name="sample"))
    m = Mirror(s)

    def blob(digest):
        with open(os.path.join(layout, "blobs", *digest.split(":")), "rb") as f:
            return f.read()

    manifest_digest = "sha256:75dea14cbc8443f211a678610cad8c7876973d0eda5529b2cf837ff7b538de0f"
    for path in ("/v2/library/edge-tools/manifests/2.0?ns=docker.io", "/v2/docker.io/library/edge-tools/manifests/2.0", "/v2/library/edge-tools/manifests/2.0"):
        status, headers, body = m.get(path)
        assert status == 200, (path, body)
        assert body == blob(manifest_digest) and headers["docker-content-digest"] == manifest_digest
    manifest = json.loads(blob(manifest_digest))
    for d in [manifest["config"], *manifest["layers"]]:
        status, headers, body = m.get(f"/v2/library/edge-tools/blobs/{d['digest']}")
        assert status == 200 and body == blob(d["digest"]) and headers["content-type"] == d["mediaType"]
    # hello's config is in the store, but not reachable from edge-tools.
    hello = json.loads(blob("sha256:59651d9e08d8d0b1652dc162be7422fc56163ef7fc2c0cb44459474780b5f2b2"))
    assert m.get(f"/v2/library/edge-tools/blobs/{hello['config']['digest']}")[0] == 404
    assert m.get(f"/v2/example.com/edge/hello/blobs/{hello['config']['digest']}")[0] == 200


def test_every_kind_of_answer_lets_the_store_go_at_a_reload(serve, workdir):
    """No answer keeps a lease on the store: after each of them, a reload closes the old backend at once."""
    s, m = stream_server(serve, workdir, generation="1")
    layer = streamed_layer(LAYER_SIZE, "1")
    blob = f"/v2/example.com/stream/app/blobs/{sha256(layer)}"
    assert m.get(blob, Range=f"bytes={LAYER_SIZE}-")[0] == 416
    assert m.head(blob)[0] == 200
    assert m.get(blob, Range="bytes=0-9")[0] == 206
    assert m.get(blob)[0] == 200
    assert m.get("/v2/example.com/stream/app/manifests/1")[0] == 200
    assert m.get("/v2/example.com/stream/app/manifests/nope")[0] == 404
    assert m.request("PUT", blob)[0] == 405
    assert m.get("/v2/example.com/stream/app/tags/list")[0] == 200
    reload_with(s, 'generation = "1"', 'generation = "2"')
    assert wait_for(lambda: 'msg="streamer closed" backend=streamer generation=1' in s.log(), timeout=5), s.log()


def test_a_client_that_leaves_before_the_first_byte_releases_the_store(serve, workdir):
    s, m = stream_server(serve, workdir, delay=1000, chunk=32768, generation="1")
    layer = streamed_layer(LAYER_SIZE, "1")
    c = socket.create_connection((m.host, m.port))
    c.sendall(f"GET /v2/example.com/stream/app/blobs/{sha256(layer)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.2)
    c.close()
    reload_with(s, 'generation = "1"', 'generation = "2"')
    assert wait_for(lambda: 'msg="streamer closed" backend=streamer generation=1' in s.log(), timeout=5), s.log()


def test_a_big_file_blob_is_hashed_before_any_header_then_sent_with_its_length(serve, workdir):
    """A file blob over 1 MiB not verified yet: hashed before the answer starts, so a right one goes out
    with its Content-Length (by sendfile, from the sender thread) and a wrong one is a 404, not a broken
    body. One written under 2 s ago may still be changing: it is streamed, hashed as it goes."""
    from conftest import oci_backend
    from mirror_http import write_big_layout

    layout = os.path.join(workdir, "big")
    image = write_big_layout(layout, "docker.io/library/big:1.0", 3 << 20)
    blob_file = os.path.join(layout, "blobs", *image["layer"].split(":"))
    with open(blob_file, "rb") as f:
        data = f.read()
    time.sleep(2.1)
    s = serve('[mirror]\nlisten = "127.0.0.1:0"\n' + oci_backend(layout))
    m = Mirror(s)
    path = f"/v2/library/big/blobs/{image['layer']}"
    for _ in range(2):  # the first GET (hashed first) and a later one (verified before) alike
        status, headers, body = m.get(path)
        assert status == 200 and body == data
        assert headers["content-length"] == str(len(data)) and headers["docker-content-digest"] == image["layer"]

    # Rewritten in place with other bytes, and old enough again: refused before any header.
    with open(blob_file, "r+b") as f:
        f.seek(1000)
        f.write(bytes([data[1000] ^ 0xFF]))
    time.sleep(2.1)
    status, _, body = m.get(path)
    assert status == 404
    err = error_of(body)
    assert err["code"] == "BLOB_UNKNOWN" and "hash to" in err["message"], err

    # Put back, just now: streamed and hashed, whole and right.
    with open(blob_file, "r+b") as f:
        f.seek(1000)
        f.write(data[1000:1001])
    status, headers, body = m.get(path)
    assert status == 200 and body == data and headers["docker-content-digest"] == image["layer"]


def test_a_download_keeps_flowing_while_the_cri_thread_is_held(serve, workdir):
    """The bytes go out from the mirror's sender thread, not from the thread that runs the handlers and
    the CRI socket: with that thread held for 4 s by a plugin, a 64 MiB file blob (far more than the
    socket buffers hold) is still received whole before the held request is answered."""
    import hashlib
    import threading

    from conftest import oci_backend
    from mirror_http import write_big_layout

    layout = os.path.join(workdir, "big")
    image = write_big_layout(layout, "docker.io/library/big:1.0", 64 << 20)
    time.sleep(2.1)  # old enough for its first verified GET to be remembered
    plugins = install_test_plugins(workdir)
    s = serve(streamer_config(plugins, mode="stall") + oci_backend(layout))
    m = Mirror(s)
    path = f"/v2/library/big/blobs/{image['layer']}"
    assert m.get(path)[0] == 200  # verified: later GETs go by sendfile

    conn = http.client.HTTPConnection(m.host, m.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    h = hashlib.sha256(r.read(1 << 20))
    held = {}

    # The streamer's config, asked through its manifest's config digest: content() holds the thread.
    config_digest = json.loads(m.get("/v2/example.com/stream/app/manifests/1")[2])["config"]["digest"]
    started = time.monotonic()
    blocker = threading.Thread(target=lambda: held.update(status=Mirror(s).get(f"/v2/example.com/stream/app/blobs/{config_digest}")[0],
                                                          at=time.monotonic() - started))
    blocker.start()
    time.sleep(0.5)
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
    received = time.monotonic() - started
    blocker.join()
    conn.close()
    assert "sha256:" + h.hexdigest() == image["layer"]
    assert held["at"] >= 3.5, held  # the plugin held the thread (its answer may be a timeout's 404)
    assert received < held["at"] - 1, (received, held)
