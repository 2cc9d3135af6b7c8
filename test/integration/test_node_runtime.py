"""The end-to-end pod harness itself (node_runtime.py): a pod really runs a
preloaded image pulled by containerd 1.6's CRI through a stand-in mirror
(Debian's distribution 2.8, images pushed by skopeo), and teardown leaves no
process behind even when containerd died under its pods."""
import os
import shutil
import signal

import pytest

from node_runtime import PAUSE, ContainerdNode, Leftovers, ensure_image, marker, needs_node, stand_in_mirror

pytestmark = [needs_node, pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs Debian's docker-registry")]


def hosts_toml(listen):
    return f'[host."http://{listen}"]\n  capabilities = ["pull", "resolve"]\n'


def test_a_pod_runs_an_image_pulled_through_a_stand_in_mirror(tmp_path, runnable_stores):
    kind = "oci-layout"
    with stand_in_mirror(tmp_path / "registry", runnable_stores.path(kind), [PAUSE, marker(kind)]) as registry:
        with ContainerdNode(tmp_path / "node", hosts_toml=hosts_toml(registry.host)) as node:
            calls = []
            image_id = ensure_image(node.socket, marker(kind), "IfNotPresent", calls=calls)
            assert calls == ["ImageStatus", "PullImage"]
            assert image_id == runnable_stores.image_id(marker(kind))
            pod = node.run_pod("harness")
            node.start_container(pod, "marker", image_id)
            node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
            assert node.image_id(PAUSE) == runnable_stores.image_id(PAUSE)
            # Present now: IfNotPresent asks ImageStatus only; Never too.
            calls.clear()
            assert ensure_image(node.socket, marker(kind), "Never", calls=calls) == image_id
            assert calls == ["ImageStatus"]


def test_teardown_removes_shims_and_containers_after_containerd_died(tmp_path, runnable_stores):
    kind = "oci-layout"
    with stand_in_mirror(tmp_path / "registry", runnable_stores.path(kind), [PAUSE, marker(kind)]) as registry:
        node = ContainerdNode(tmp_path / "node", hosts_toml=hosts_toml(registry.host))
        try:
            image_id = ensure_image(node.socket, marker(kind), "Always")
            pod = node.run_pod("orphaned")
            node.start_container(pod, "marker", image_id)
            node.wait_log(pod, "marker", f"imagelet-marker-{kind}")
            os.killpg(node.proc.pid, signal.SIGKILL)  # containerd gone; its shims and containers live on
            node.proc.wait()
            assert node._node_processes(), "the shims and containers should outlive containerd"
        finally:
            with pytest.raises(Leftovers, match="containerd-shim-runc-v2"):
                node.close()
        assert node._node_processes() == [] and node._mounts() == []
