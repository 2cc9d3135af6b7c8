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
import tarfile

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
