// The repo digests of an image served through a manifest imagelet writes
// (docs/mirror.md, "Manifests imagelet writes"): one per repository the image
// is named in, at the written manifest's digest, and none without one.
import { describe, expect, test } from "bun:test";
import { writtenRepoDigests } from "../../src/backends/common/written-manifest";

const manifest = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${"a".repeat(64)}`, size: 300 };
const recorded = `sha256:${"b".repeat(64)}`;

describe("writtenRepoDigests", () => {
  test("every repository of a tag or a recorded repo digest, once, at the written digest, sorted", () => {
    const names = ["example.com/app:1.0", "example.com/app:2.0", `registry.local:5000/pinned@${recorded}`, "docker.io/library/busybox:1"];
    expect(writtenRepoDigests(names, manifest)).toEqual([
      `docker.io/library/busybox@${manifest.digest}`,
      `example.com/app@${manifest.digest}`,
      `registry.local:5000/pinned@${manifest.digest}`,
    ]);
  });

  test("the store's recorded digest is never reported; familiar names are normalized", () => {
    const got = writtenRepoDigests([`busybox@${recorded}`], manifest);
    expect(got).toEqual([`docker.io/library/busybox@${manifest.digest}`]);
  });

  test("no written manifest (the image cannot be served): none; a name that is not a reference is left out", () => {
    expect(writtenRepoDigests(["example.com/app:1.0"], undefined)).toEqual([]);
    expect(writtenRepoDigests(["Not A Name", "example.com/app:1.0"], manifest)).toEqual([`example.com/app@${manifest.digest}`]);
  });
});
