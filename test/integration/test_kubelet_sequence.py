"""The calls kubelet makes, in kubelet's order, against a preloaded device:
ImageFsInfo and ListImages, then per container ImageStatus and PullImage by
pull policy (pkg/kubelet/images/image_manager.go EnsureImageExists), then an
image GC pass (image_gc_manager.go freeSpace) that removes the unused,
unpinned image by the ID it listed and sees the freed bytes in ImageFsInfo."""
import os
import shutil

import grpc
import pytest

from conftest import EXAMPLES, FIXTURES, expected, oci_backend

E = expected()
HELLO = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "1.0")
SECOND = next(e for e in E if e["layout"] == "oci-umoci" and e["ref"] == "2.0")


class Kubelet:
    """What kubelet does with the image service, reduced to the calls."""

    def __init__(self, server):
        self.s = server
        self.pb = server.pb
        self.calls = []

    def call(self, name, request):
        self.calls.append(name)
        return getattr(self.s.stub, name)(request, timeout=10)

    def spec(self, image):
        # kubelet only default-tags (applyDefaultImageTag), never qualifies the name.
        if "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
            image += ":latest"
        return self.pb.ImageSpec(image=image, runtime_handler="")

    def ensure_image(self, image, policy=None):
        """EnsureImageExists: the image ID the container runs, or the kubelet error reason."""
        if policy is None:  # the API server's default: Always for :latest or untagged, else IfNotPresent
            policy = "Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] else "IfNotPresent"
        spec = self.spec(image)
        present = self.call("ImageStatus", self.pb.ImageStatusRequest(image=spec))
        if policy == "Never" or (policy == "IfNotPresent" and present.HasField("image")):
            return present.image.id if present.HasField("image") else "ErrImageNeverPull"
        try:
            ref = self.call("PullImage", self.pb.PullImageRequest(image=spec)).image_ref
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            return "ErrImagePull"
        # After a pull kubelet asks ImageStatus again (for the size); cri-client rejects id "" or size 0.
        after = self.call("ImageStatus", self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref)))
        assert after.image.id == ref and after.image.size > 0
        return ref

    def image_fs(self):
        fs = self.call("ImageFsInfo", self.pb.ImageFsInfoRequest()).image_filesystems
        assert fs, "imageFs information is unavailable"
        return fs[0]

    def gc_pass(self, in_use):
        """freeSpace: remove every image that is neither in use nor pinned, by the ID listed."""
        freed_by_size, removed = 0, []
        for image in self.call("ListImages", self.pb.ListImagesRequest()).images:
            if image.id in in_use or image.pinned:
                continue
            self.call("RemoveImage", self.pb.RemoveImageRequest(image=self.pb.ImageSpec(image=image.id)))
            freed_by_size += image.size
            removed.append(image.id)
        return removed, freed_by_size


@pytest.fixture
def node(serve, workdir):
    layout = os.path.join(workdir, "store", "oci-umoci")
    shutil.copytree(os.path.join(FIXTURES, "oci-umoci"), layout)
    config = (
        'pinned_images = ["example.com/edge/hello:1.0"]\n'
        + oci_backend(layout, name="device", writable=True)
        + oci_backend(os.path.join(EXAMPLES, "sample-oci"), name="factory")  # read-only: kept
    )
    return Kubelet(serve(config)), layout


def test_kubelet_start_pods_then_gc(node):
    k, layout = node
    before = k.image_fs()
    assert before.used_bytes.value > 0 and before.fs_id.mountpoint
    listed = {i.id: i for i in k.call("ListImages", k.pb.ListImagesRequest()).images}
    assert len(listed) == 4
    tools = k.s.image_status("edge-tools:2.0").image.id

    k.calls.clear()
    # Untagged: :latest, so Always: ImageStatus, PullImage (found on the device), ImageStatus.
    assert k.ensure_image("localhost/oci-umoci") == HELLO["id"]
    assert k.calls == ["ImageStatus", "PullImage", "ImageStatus"]
    k.calls.clear()
    # Tagged: IfNotPresent, present: no PullImage.
    assert k.ensure_image("localhost/oci-umoci:2.0") == SECOND["id"]
    assert k.calls == ["ImageStatus"]
    # Always, explicitly (and KEP-2535's re-verification is the same PullImage).
    assert k.ensure_image("edge-tools:2.0", "Always") == tools
    assert k.ensure_image("edge-tools:2.0", "Never") == tools
    # Absent: IfNotPresent pulls and fails with NOT_FOUND; Never does not pull.
    k.calls.clear()
    assert k.ensure_image("busybox:1.36") == "ErrImagePull"
    assert k.calls == ["ImageStatus", "PullImage"]
    k.calls.clear()
    assert k.ensure_image("busybox:1.36", "Never") == "ErrImageNeverPull"
    assert k.calls == ["ImageStatus"]

    # The pod using localhost/oci-umoci:2.0 is gone; the disk is over its threshold: GC.
    in_use = {HELLO["id"], tools}
    k.calls.clear()
    removed, freed_by_size = k.gc_pass(in_use)
    # HELLO is in use (and pinned), the factory images are read-only (pinned): only SECOND goes.
    assert removed == [SECOND["id"]]
    assert freed_by_size == SECOND["size"]
    assert k.calls == ["ListImages", "RemoveImage"]
    after = k.image_fs()
    assert after.used_bytes.value < before.used_bytes.value
    assert after.inodes_used.value == before.inodes_used.value - 3  # manifest, config, layer
    remaining = {i.id for i in k.call("ListImages", k.pb.ListImagesRequest()).images}
    assert remaining == set(listed) - {SECOND["id"]}
    # A second GC pass has nothing left to remove.
    assert k.gc_pass(set())[0] == []
