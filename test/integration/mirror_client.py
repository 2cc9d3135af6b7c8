"""Helpers for the registry-mirror tests: a catalog-plugin store with real
layer tars, and a plain HTTP client (http.client, sharing no code with the
server) for the mirror's port, learnt from imagelet's log."""
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import tarfile
import time

from conftest import ROOT

CATALOG_PLUGIN = os.path.join(ROOT, "plugins", "catalog")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files):
    """An uncompressed layer: {name: bytes}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class CatalogImage:
    def __init__(self, config, layers):
        self.config = config
        self.layers = layers
        self.id = sha256(config)
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.id, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": sha256(l), "size": len(l)} for l in layers],
        }
        self.manifest = json.dumps(document, separators=(",", ":")).encode()
        self.manifest_digest = sha256(self.manifest)


def write_catalog(workdir, images):
    """images: [(tags, files-per-layer list)] → (plugin_dir, catalog path, [CatalogImage])."""
    plugins = os.path.join(workdir, "plugins")
    if not os.path.exists(plugins):
        os.makedirs(plugins)
        shutil.copytree(CATALOG_PLUGIN, os.path.join(plugins, "catalog"), symlinks=False)
    store = os.path.join(workdir, "vendor")
    os.makedirs(os.path.join(store, "layers"), exist_ok=True)
    os.makedirs(os.path.join(store, "configs"), exist_ok=True)
    entries, made = [], []
    for i, (tags, layer_files) in enumerate(images):
        layers = [layer_tar(files) for files in layer_files]
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(l) for l in layers]},
        }, separators=(",", ":")).encode()
        with open(os.path.join(store, "configs", f"image{i}.json"), "wb") as f:
            f.write(config)
        names = []
        for j, l in enumerate(layers):
            name = f"layers/image{i}-{j}.tar"
            with open(os.path.join(store, name), "wb") as f:
                f.write(l)
            names.append(name)
        entries.append({"config": f"configs/image{i}.json", "tags": tags, "layers": names})
        made.append(CatalogImage(config, layers))
    catalog = os.path.join(store, "catalog.json")
    with open(catalog, "w") as f:
        json.dump({"image": entries}, f)
    return plugins, catalog, made


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def reload_with(server, old, new):
    """Rewrites the server's config (`old` → `new`), sends SIGHUP and waits for the reload to end."""
    with open(server.config) as f:
        text = f.read()
    assert old in text
    with open(server.config, "w") as f:
        f.write(text.replace(old, new))
    done = server.log().count('msg="reloaded"')
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: server.log().count('msg="reloaded"') > done), server.log()


def catalog_config(plugins, catalog, listen="127.0.0.1:0", name="vendor"):
    return (
        f'plugin_dir = "{plugins}"\npoll_interval = "1s"\n'
        f'[mirror]\nlisten = "{listen}"\n'
        f'[[backend]]\ntype = "catalog"\nname = "{name}"\npath = "{catalog}"\n'
    )


def mirror_address(server):
    m = re.search(r'msg="serving the registry mirror \(read-only\)" listen=(\S+)', server.log())
    assert m, server.log()
    host, port = m.group(1).rsplit(":", 1)
    return host.strip("[]"), int(port)


class Mirror:
    """One connection per request, as simple clients make them."""

    def __init__(self, server):
        self.host, self.port = mirror_address(server)

    def request(self, method, path, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def get(self, path, **headers):
        return self.request("GET", path, headers)

    def head(self, path, **headers):
        return self.request("HEAD", path, headers)


# Module plugins for the tests: `streamer` serves one image whose layer is an
# `open` body (made as it is sent; modes make it fail in each way a body can;
# "stall" holds the thread its content() runs on for 4 s when asked for the config),
# plus an embedded image it would serve if asked; `nohook` lists an image with
# a target but has no content hook, and a notice.
STREAMER = r"""
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const CONFIG = "application/vnd.oci.image.config.v1+json";
const LAYER = "application/vnd.oci.image.layer.v1.tar";
const sha = (b) => "sha256:" + new Bun.CryptoHasher("sha256").update(b).digest("hex");
const text = (v) => new TextEncoder().encode(JSON.stringify(v));

export default {
  name: "streamer",
  apiVersion: 1,
  options: {
    size: { type: "number" }, chunk: { type: "number" }, delay: { type: "number" },
    mode: { type: "string" }, generation: { type: "string" }, tag: { type: "string" },
  },
  create(o, ctx) {
    const size = o.size ?? 1048576, chunk = o.chunk ?? 65536, delay = o.delay ?? 0, mode = o.mode ?? "good";
    const generation = o.generation ?? "1";
    const blob = new Uint8Array(size);
    for (let i = 0; i < size; i++) blob[i] = (i * 7 + generation.charCodeAt(0)) & 255;
    const layer = { mediaType: LAYER, digest: sha(blob), size };
    const config = text({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [layer.digest] }, generation });
    const manifest = text({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: CONFIG, digest: sha(config), size: config.length }, layers: [layer] });
    const target = { mediaType: MANIFEST, digest: sha(manifest), size: manifest.length };
    const image = { id: sha(config), repoTags: [o.tag ?? "example.com/stream/app:1"], repoDigests: [], size: size + config.length, kind: "oci", target };
    const embedded = { id: sha(text("embedded")), repoTags: ["example.com/stream/embedded:1"], repoDigests: [], size: 1, kind: "embedded", target };
    const bad = mode === "badbytes" ? manifest.slice() : manifest;
    if (mode === "badbytes") bad[bad.length - 2] ^= 1;
    return {
      list: () => [image, embedded],
      content(id, digest) {
        // Would serve the embedded image too: the mirror must never ask.
        if (id === embedded.id) return { mediaType: MANIFEST, size: manifest.length, bytes: manifest };
        if (id !== image.id) return undefined;
        if (digest === target.digest) return { mediaType: MANIFEST, size: manifest.length, bytes: bad };
        if (digest === image.id && mode === "stall") {
          // Holds the handlers' thread (the CRI's): nothing on it runs for 4 s.
          for (const end = Date.now() + 4000; Date.now() < end; );
        }
        if (digest === image.id) return { mediaType: CONFIG, size: config.length, bytes: config };
        if (digest !== layer.digest) return undefined;
        return {
          mediaType: LAYER,
          size,
          async *open(start, signal) {
            for (let at = start; at < size; at += chunk) {
              if (delay) await Bun.sleep(delay);
              if (signal.aborted) return;
              let piece = blob.slice(at, Math.min(size, at + chunk));
              if (mode === "fail" && at >= size / 2) throw new Error("the store went away mid-layer");
              if (mode === "short" && at + chunk >= size) return;
              if (mode === "wrong" && at + chunk >= size) piece[0] ^= 1;
              if (mode === "long" && at + chunk >= size) piece = new Uint8Array([...piece, 1]);
              yield piece;
            }
          },
        };
      },
      close() {
        ctx.log.info("streamer closed", { generation });
      },
    };
  },
};
"""

NOHOOK = r"""
export default {
  name: "nohook",
  apiVersion: 1,
  options: {},
  create(_o, ctx) {
    ctx.setNotice("this store keeps no layers");
    const target = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "c3".repeat(32), size: 100 };
    return { list: () => [{ id: "sha256:" + "d4".repeat(32), repoTags: ["example.com/nohook/app:1"], repoDigests: [], size: 9, kind: "oci", target }] };
  },
};
"""


def install_test_plugins(workdir):
    d = os.path.join(workdir, "plugins")
    os.makedirs(d, mode=0o755, exist_ok=True)
    for name, source in (("streamer.ts", STREAMER), ("nohook.ts", NOHOOK)):
        with open(os.path.join(d, name), "w") as f:
            f.write(source)
        os.chmod(os.path.join(d, name), 0o644)
    return d


def streamer_config(plugins, listen="127.0.0.1:0", **options):
    lines = [f'plugin_dir = "{plugins}"', "[mirror]", f'listen = "{listen}"', "[[backend]]", 'type = "streamer"', 'name = "streamer"']
    for k, v in options.items():
        lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    lines += ["[[backend]]", 'type = "nohook"', 'name = "nohook"']
    return "\n".join(lines) + "\n"


def streamed_layer(size, generation="1"):
    return bytes((i * 7 + ord(generation)) & 255 for i in range(size))
