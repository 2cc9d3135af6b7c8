"""Mirror mode, end to end: imagelet serves one store of each kind, containerd
1.6's CRI (its own image service, configured with what `imagelet mirror-config
containerd` prints) pulls the images through imagelet's mirror, kubelet 1.26's
image sequence hands CreateContainer the image ID, and the container really
runs: it prints its marker. The sandbox (pause) image comes from the same store
through the mirror. Each test runs on a fresh containerd root. podman and
Docker pull through the files `mirror-config crio` and `mirror-config docker`
print and get imagelet's image ID.

Runs as root with Debian's containerd, runc, busybox-static, umoci, skopeo,
podman and docker.io (see node_runtime.py)."""
import os
import re
import shutil
import time
import tomllib

import grpc
import pytest

from conftest import run_cli
from mirror_client import mirror_address, wait_for
from node_runtime import (  # noqa: F401  (canary, nothing_goes_past_the_mirror: fixtures)
    HUB_MARKER, PAUSE, STORE_KINDS, ContainerdNode, Dockerd, ImageNeverPull, Podman, canary, ensure_image, marker,
    needs_node, nothing_goes_past_the_mirror, record,
)


pytestmark = needs_node


def serve_mirror(serve, stores, *kinds):
    """imagelet serving the stores of `kinds`, its mirror on a port the system chooses (read from its log)."""
    config = "".join(stores.backend(k) for k in kinds) + '[mirror]\nlisten = "127.0.0.1:0"\n'
    server = serve(config, subdir=f"imagelet-{'-'.join(kinds)}")
    assert wait_for(lambda: "serving the registry mirror" in server.log()), server.log()[-2000:]
    host, port = mirror_address(server)
    server.mirror_listen = f"{host}:{port}"
    return server


def printed(server, runtime):
    """What `imagelet mirror-config RUNTIME` prints for this server's stores and mirror."""
    out = run_cli("mirror-config", runtime, "--config", server.config, "--listen", server.mirror_listen)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_pod_starts_from_a_preloaded_image_of_each_store_kind(kind, tmp_path, serve, runnable_stores, canary):
    t0 = time.perf_counter()
    server = serve_mirror(serve, runnable_stores, kind)
    want = runnable_stores.image_id(marker(kind))
    assert server.image_status(marker(kind)).image.id == want
    with ContainerdNode(tmp_path / "node", sandbox_image=PAUSE, hosts_toml=printed(server, "containerd"), env=canary.env) as node:
        # kubelet's order: the sandbox first (containerd pulls its image through the mirror too),
        # then EnsureImageExists for the container, with the sandbox's config.
        content_before = node.disk_usage(node.CONTENT)
        pod = node.run_pod(f"pod-{kind}")
        assert node.image_id(PAUSE) == server.image_status(PAUSE).image.id == runnable_stores.image_id(PAUSE)
        after_sandbox = node.disk_usage(node.CONTENT), node.snapshot_sizes()
        calls = []
        t_pull = time.perf_counter()
        image_id = ensure_image(node.socket, marker(kind), "IfNotPresent", sandbox_config=pod.config, calls=calls)
        pull_s = time.perf_counter() - t_pull
        assert calls == ["ImageStatus", "PullImage"]  # absent from the fresh root, so pulled
        assert image_id == want
        # The two images share their one layer, which the sandbox's pull brought: the container's
        # image adds only its manifest and config, and no snapshot.
        assert node.disk_usage(node.CONTENT) - after_sandbox[0] < 8192 and node.snapshot_sizes() == after_sandbox[1]
        content = node.disk_usage(node.CONTENT) - content_before  # the blobs as served, both images
        size = server.image_status(marker(kind)).image.size
        # (A Docker root's CRI size is Docker's: the files, without the tar headers the mirror serves.)
        assert size <= content < size + 32768, (content, size)
        node.start_container(pod, "marker", image_id)
        node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
        # Snapshot 1: the unpacked layer; then the sandbox's and the container's writable copies.
        snapshots = node.snapshot_sizes()
        assert len(snapshots) == 3 and min(snapshots.values()) > 1_900_000, snapshots
    record(runtime="containerd 1.6", mode="mirror", policy="IfNotPresent", kind=kind, started=True,
           pull_s=round(pull_s, 3), content_bytes=content, layer_bytes=snapshots[1], container_copy_bytes=snapshots[3], image_size=size, seconds=round(time.perf_counter() - t0, 2))


def test_pull_policies_in_mirror_mode(tmp_path, serve, runnable_stores, canary):
    """The runtime's own image service decides: Never fails on a fresh root (the runtime has never
    seen a preloaded image); IfNotPresent pulls once; Always asks the mirror again, same ID."""
    kind = "oci-layout"
    server = serve_mirror(serve, runnable_stores, kind)
    want = runnable_stores.image_id(marker(kind))
    with ContainerdNode(tmp_path / "node", sandbox_image=PAUSE, hosts_toml=printed(server, "containerd"), env=canary.env) as node:
        pod = node.run_pod("policies")
        with pytest.raises(ImageNeverPull):
            ensure_image(node.socket, marker(kind), "Never")
        calls = []
        assert ensure_image(node.socket, marker(kind), "IfNotPresent", calls=calls) == want
        assert calls == ["ImageStatus", "PullImage"]
        calls.clear()
        assert ensure_image(node.socket, marker(kind), "Always", calls=calls) == want
        assert calls == ["ImageStatus", "PullImage"]
        calls.clear()
        assert ensure_image(node.socket, marker(kind), "Never", calls=calls) == want
        assert calls == ["ImageStatus"]
        node.start_container(pod, "marker", want)
        node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
        # imagelet stopped: Always fails, containerd having gone on to the image's own registry (no
        # `server` line in hosts.toml), which the canary proxy refused; the copy containerd holds
        # still starts under IfNotPresent.
        server.stop()
        with pytest.raises(grpc.RpcError):
            ensure_image(node.socket, marker(kind), "Always")
        assert [r for r in canary.take() if r.startswith("CONNECT example.com:443")], "containerd did not try the registry"
        calls.clear()
        assert ensure_image(node.socket, marker(kind), "IfNotPresent", calls=calls) == want
        assert calls == ["ImageStatus"]
        node.start_container(pod, "again", want)
        node.wait_log(pod, "again", f"imagelet-marker-{kind}")
    for policy, started in (("Never (fresh root)", False), ("IfNotPresent", True), ("Always", True), ("Never (after a pull)", True),
                            ("Always (imagelet stopped)", False), ("IfNotPresent (imagelet stopped, pulled before)", True)):
        record(runtime="containerd 1.6", mode="mirror", policy=policy, kind=kind, started=started)


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs Debian's podman")
def test_podman_pulls_through_the_crio_config_and_gets_imagelets_id(tmp_path, serve, runnable_stores, canary):
    # containers/storage: a store without the original manifest (imagelet writes one); the OCI layout
    # adds a docker.io name, so the file has two [[registry]] tables and both are used.
    server = serve_mirror(serve, runnable_stores, "containers-storage", "oci-layout")
    with Podman(tmp_path / "podman", printed(server, "crio"), env=canary.env) as podman:
        for ref in (marker("containers-storage"), HUB_MARKER):
            want = server.image_status(ref).image.id
            assert want == runnable_stores.image_id(ref)
            podman("pull", "-q", ref)
            assert podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == want.removeprefix("sha256:")
    record(runtime="podman 4.3", mode="mirror", policy="pull", kind="containers-storage, OCI layout (docker.io name)", started=None)


@pytest.mark.skipif(shutil.which("dockerd") is None, reason="needs Debian's docker.io")
def test_docker_pulls_hub_names_through_the_docker_config_and_gets_imagelets_id(tmp_path, serve, runnable_stores, canary):
    kind = "docker"  # a Docker root: imagelet writes the manifest; registry-mirrors carry Hub names only
    server = serve_mirror(serve, runnable_stores, kind)
    want = server.image_status(HUB_MARKER).image.id
    assert want == runnable_stores.image_id(HUB_MARKER)
    with Dockerd(printed(server, "docker"), proxy_env=canary.env).start() as dockerd:
        pulled = dockerd.docker("pull", "-q", "imagelet-marker:1.0")
        assert pulled.returncode == 0, pulled.stderr
        assert dockerd.docker("image", "inspect", "--format", "{{.Id}}", "imagelet-marker:1.0").stdout.strip() == want
    record(runtime="docker 20.10", mode="mirror", policy="pull", kind=kind, started=None)


def test_the_per_registry_layout_for_containerd_before_1_6_17(tmp_path, serve, runnable_stores, canary):
    """Before 1.6.17 containerd has no _default: the same file under certs.d/<registry>/ for each
    registry mirror-config's comment names. (1.6.20 reads both layouts; here only the per-registry one.)"""
    kind = "oci-layout"
    server = serve_mirror(serve, runnable_stores, kind)
    text = printed(server, "containerd")
    registries = re.search(r"^#\s+hold: (.+)\.$", text, re.M).group(1).split(", ")
    assert registries == ["docker.io", "example.com"]
    with ContainerdNode(tmp_path / "node", sandbox_image=PAUSE, env=canary.env) as node:
        for registry in registries:
            node.write_hosts_toml(text, host=registry)
        assert not os.path.exists(os.path.join(node.certs, "_default"))
        pod = node.run_pod("per-registry")
        image_id = ensure_image(node.socket, marker(kind), "IfNotPresent", sandbox_config=pod.config)
        assert image_id == runnable_stores.image_id(marker(kind))
        node.start_container(pod, "marker", image_id)
        node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
    record(runtime="containerd 1.6", mode="mirror (certs.d/<registry>/, as before 1.6.17)", policy="IfNotPresent", kind=kind, started=True)


def test_the_offline_server_line_keeps_every_pull_on_the_mirror(tmp_path, serve, runnable_stores, canary):
    """mirror-config's commented `server` line, uncommented: pods start as before, and with imagelet
    stopped containerd's pull fails on the mirror instead of going on to the image's registry."""
    kind = "oci-layout"
    server = serve_mirror(serve, runnable_stores, kind)
    text, n = re.subn(r"^# (server = .+)$", r"\1", printed(server, "containerd"), flags=re.M)
    assert n == 1 and tomllib.loads(text)["server"] == f"http://{server.mirror_listen}"
    with ContainerdNode(tmp_path / "node", sandbox_image=PAUSE, hosts_toml=text, env=canary.env) as node:
        pod = node.run_pod("offline")
        image_id = ensure_image(node.socket, marker(kind), "Always", sandbox_config=pod.config)
        node.start_container(pod, "marker", image_id)
        node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
        server.stop()
        with pytest.raises(grpc.RpcError) as failed:
            ensure_image(node.socket, marker(kind), "Always")
        assert server.mirror_listen in failed.value.details()
        # (nothing reached the canary: checked by nothing_goes_past_the_mirror)
    record(runtime="containerd 1.6", mode="mirror, with the server line (offline)", policy="Always; Always with imagelet stopped", kind=kind, started=True)
