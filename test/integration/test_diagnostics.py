"""`imagelet plugins --endpoint`: the running server's own view of its backends
(imagelet.v1.Diagnostics), which a fresh in-process load cannot show: a store
that broke after the start keeps serving its last good list, and says why."""
import json
import os
import shutil
import time
from concurrent import futures

import grpc

import cri_stubs
from conftest import EXAMPLES, oci_backend, run_cli

SAMPLE = os.path.join(EXAMPLES, "sample-oci")
NOT_A_BACKEND = "export default { hello: 1 };\n"


def test_live_backends_show_a_store_that_broke_after_the_start(serve, workdir):
    layout = os.path.join(workdir, "layout")
    shutil.copytree(SAMPLE, layout)
    plugins = os.path.join(workdir, "plugins")
    os.makedirs(plugins, mode=0o755)
    os.chmod(plugins, 0o755)
    with open(os.path.join(plugins, "broken.ts"), "w") as f:
        f.write(NOT_A_BACKEND)
    os.chmod(os.path.join(plugins, "broken.ts"), 0o644)
    s = serve(f'plugin_dir = "{plugins}"\n' + oci_backend(SAMPLE, name="good") + oci_backend(layout, name="breaking"))
    endpoint = f"unix://{s.socket}"
    with open(os.path.join(layout, "index.json"), "w") as f:
        f.write("{ not json")
    # The watcher notices within its poll interval; ask until the server has seen it.
    for _ in range(100):
        live = run_cli("plugins", "-o", "json", "--endpoint", endpoint)
        assert live.returncode == 0, live.stderr
        report = json.loads(live.stdout)
        backends = {b["name"]: b for b in report["backends"]}
        if backends["breaking"]["state"] == "failing":
            break
        time.sleep(0.1)
    assert backends["good"]["state"] == "ok" and backends["good"]["images"] == 2
    breaking = backends["breaking"]
    assert breaking["state"] == "failing"
    assert "index.json" in breaking["lastError"]
    assert breaking["images"] == 2  # its last good list, still served
    assert [r["path"] for r in report["refused"]] == [os.path.join(plugins, "broken.ts")]
    assert len(s.list_images()) == 2
    # The table says the same, and a fresh in-process load could not: it has no last good list.
    table = run_cli("plugins", "--endpoint", endpoint).stdout
    assert "breaking" in table and "failing" in table and "index.json" in table
    fresh = json.loads(run_cli("plugins", "-o", "json", "--config", s.config).stdout)
    assert {b["name"]: b["images"] for b in fresh["backends"]}["breaking"] == 0


def test_another_image_service_is_named_as_not_imagelet(workdir):
    pb, pbg = cri_stubs.load()

    class OtherRuntime(pbg.ImageServiceServicer):
        def ListImages(self, request, context):
            return pb.ListImagesResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pbg.add_ImageServiceServicer_to_server(OtherRuntime(), server)
    sock = os.path.join(workdir, "other.sock")
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    try:
        out = run_cli("plugins", "--endpoint", f"unix://{sock}")
        assert out.returncode == 1
        assert out.stderr.strip().endswith("is an image service but not imagelet: it has no imagelet.v1.Diagnostics"), out.stderr
    finally:
        server.stop(0)
