"""The registry mirror ([mirror]): the distribution-spec pull API served from
imagelet's stores, called over TCP with Python's http.client (no code shared
with the server). The store is plugins/catalog, the example plugin with the
content hook."""
import json

from mirror_client import Mirror, catalog_config, write_catalog, sha256


def test_pull_api_by_tag_and_digest_through_the_catalog_plugin(serve, workdir):
    plugins, catalog, (image,) = write_catalog(workdir, [(["example.com/edge/app:1.0"], [{"bin/app": b"hello\n"}])])
    s = serve(catalog_config(plugins, catalog))
    m = Mirror(s)

    status, headers, body = m.get("/v2/")
    assert status == 200 and headers["docker-distribution-api-version"] == "registry/2.0"

    status, headers, body = m.get("/v2/example.com/edge/app/manifests/1.0")
    assert status == 200, body
    assert body == image.manifest
    assert headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert headers["docker-content-digest"] == image.manifest_digest
    assert headers["content-length"] == str(len(image.manifest))

    status, headers, body = m.get(f"/v2/example.com/edge/app/blobs/{image.id}")
    assert status == 200 and body == image.config and sha256(body) == image.id
    assert headers["accept-ranges"] == "bytes"

    layer = image.layers[0]
    status, headers, body = m.get(f"/v2/example.com/edge/app/blobs/{sha256(layer)}")
    assert status == 200 and body == layer

    status, headers, body = m.get("/v2/example.com/edge/app/manifests/2.0")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
