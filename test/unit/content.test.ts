// registry/content.ts: which backend gives the mirror the bytes of a digest,
// and what it refuses (embedded images, backends without the hook, a
// malformed answer, a hook that throws), each reason naming the backend.
import { describe, expect, test } from "bun:test";
import type { Backend, ContentBody } from "../../src/backend/contract";
import { bodyProblem, findContent } from "../../src/registry/content";
import { BackendRegistry } from "../../src/registry/registry";
import { validateRecord } from "../../src/registry/validate";
import { id, memoryLogger, record } from "./helpers";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const target = { mediaType: MANIFEST, digest: id("d"), size: 3 };
const body: ContentBody = { mediaType: MANIFEST, size: 3, bytes: new Uint8Array([1, 2, 3]) };

async function registryOf(backends: Record<string, Backend>, notices: Record<string, string> = {}) {
  const log = memoryLogger();
  const registry = new BackendRegistry(
    Object.entries(backends).map(([name, backend]) => ({ name, type: "test", backend, timeoutMs: 50, notice: () => notices[name] })),
    { log },
  );
  await registry.loadAll();
  return { registry, log };
}

describe("findContent", () => {
  test("asks the holders in order and returns the first answer, naming its backend", async () => {
    const asked: string[] = [];
    const list = () => [record({ id: id("1"), repoTags: ["a:1"], target })];
    const { registry, log } = await registryOf({
      first: { list, content: (i, d) => void asked.push(`first ${i} ${d}`) },
      second: { list, content: () => (asked.push("second"), body) },
    });
    const answer = await findContent(registry, registry.view.images, id("d"), log);
    expect(answer.found?.backend).toBe("second");
    expect(asked).toEqual([`first ${id("1")} ${id("d")}`, "second"]);
  });

  test("undefined digest: each image's own target", async () => {
    let asked = "";
    const { registry, log } = await registryOf({ b: { list: () => [record({ id: id("1"), target })], content: (_i, d) => ((asked = d), body) } });
    expect((await findContent(registry, registry.view.images, undefined, log)).found).toBeDefined();
    expect(asked).toBe(id("d"));
  });

  test("without the hook, embedded, without a target, failing or malformed: 404 reasons that name the backend", async () => {
    const { registry, log } = await registryOf(
      {
        nohook: { list: () => [record({ id: id("1"), target })] },
        embedded: { list: () => [record({ id: id("2"), kind: "embedded", target })], content: () => body },
        notarget: { list: () => [record({ id: id("3") })], content: () => body },
        throws: { list: () => [record({ id: id("4"), target })], content: () => { throw new Error("disk on fire"); } },
        hangs: { list: () => [record({ id: id("5"), target })], content: () => new Promise<never>(() => {}) },
        malformed: { list: () => [record({ id: id("6"), target })], content: () => ({ mediaType: "x\r\ny", size: 3, bytes: new Uint8Array(3) }) },
      },
      { nohook: "this store keeps no layers" },
    );
    const answer = await findContent(registry, registry.view.images, id("d"), log);
    expect(answer.found).toBeUndefined();
    const reasons = answer.found ? [] : answer.reasons;
    expect(reasons).toEqual([
      `backend "nohook" (test) does not serve its images on the mirror: this store keeps no layers`,
      `image ${id("2")} is an embedded image, which the mirror never serves`,
      `backend "throws" failed: disk on fire`,
      `backend "hangs" failed: timed out after 50 ms`,
      `backend "malformed" answered a malformed body (mediaType "x\\r\\ny" is not a media type)`,
      // Images whose target is the digest are asked first.
      `backend "notarget" (test) names no target for image ${id("3")}`,
    ]);
    expect(log.lines.filter((l) => l.msg.startsWith("backend content()")).map((l) => l.fields?.backend)).toEqual(["throws", "hangs", "malformed"]);
  });

  test("a digest that is not one is refused before any backend is asked", async () => {
    let asked = false;
    const { registry, log } = await registryOf({ b: { list: () => [record({ id: id("1"), target })], content: () => ((asked = true), body) } });
    expect((await findContent(registry, registry.view.images, "sha256:../../etc/passwd", log)).found).toBeUndefined();
    expect(asked).toBe(false);
  });
});

describe("bodyProblem", () => {
  test("exactly one of file, bytes, open; sizes and paths checked", () => {
    expect(bodyProblem(body)).toBeUndefined();
    expect(bodyProblem({ mediaType: MANIFEST, size: 3, file: { path: "/s/blob", offset: 0 } })).toBeUndefined();
    expect(bodyProblem({ mediaType: MANIFEST, size: 3, open: async function* () {} })).toBeUndefined();
    expect(bodyProblem({ mediaType: MANIFEST, size: 3 })).toContain("exactly one");
    expect(bodyProblem({ ...body, file: { path: "/x", offset: 0 } })).toContain("exactly one");
    expect(bodyProblem({ mediaType: MANIFEST, size: 3, file: { path: "relative", offset: 0 } })).toContain("absolute");
    expect(bodyProblem({ mediaType: MANIFEST, size: 3, file: { path: "/x", offset: -1 } })).toContain("offset");
    expect(bodyProblem({ mediaType: MANIFEST, size: 4, bytes: new Uint8Array(3) })).toContain("bytes");
    expect(bodyProblem({ mediaType: MANIFEST, size: -1, bytes: new Uint8Array(0) })).toContain("size");
    expect(bodyProblem(null)).toBe("not an object");
  });
});

describe("ImageRecord.target", () => {
  test("validated: digest grammar, media type, positive size; copied without extra fields", () => {
    expect(validateRecord(record({ id: id("1"), target: { ...target, extra: 1 } as never })).target).toEqual(target);
    expect(() => validateRecord(record({ id: id("1"), target: { ...target, digest: "sha256:abc" } }))).toThrow("target.digest");
    expect(() => validateRecord(record({ id: id("1"), target: { ...target, mediaType: "text/plain; charset=x" } }))).toThrow("target.mediaType");
    expect(() => validateRecord(record({ id: id("1"), target: { ...target, size: 0 } }))).toThrow("target.size");
  });
});
