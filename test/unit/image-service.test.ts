import { describe, expect, test } from "bun:test";
import type { CallContext } from "nice-grpc";
import { BackendRegistry } from "../../src/registry/registry";
import { KUBELET_MAX_RECEIVE_BYTES, createImageService } from "../../src/server/image-service";
import { runtime } from "../../src/gen/runtime-v1.js";
import { id, memoryLogger, record } from "./helpers";

const context = { signal: new AbortController().signal } as unknown as CallContext;

async function serviceOver(records: ReturnType<typeof record>[]) {
  const log = memoryLogger();
  const registry = new BackendRegistry([{ name: "b", type: "test", backend: { list: () => records }, timeoutMs: 1000 }], { log });
  await registry.loadAll();
  return { service: createImageService(registry, log), log };
}

describe("ListImages over kubelet's 16 MiB limit", () => {
  test("is answered, and logged once with the advice to enable StreamImages", async () => {
    // 300 images × 250 tags of ~230 bytes ≈ 17 MB.
    const records = Array.from({ length: 300 }, (_, i) =>
      record({
        id: `sha256:${i.toString(16).padStart(64, "0")}`,
        repoTags: Array.from({ length: 250 }, (_, t) => `example.com/${"x".repeat(200)}/app${i}:t${t}`) }),
    );
    const { service, log } = await serviceOver(records);
    const first = (await service.listImages({} as never, context)) as Uint8Array;
    expect(first.length).toBeGreaterThan(KUBELET_MAX_RECEIVE_BYTES);
    await service.listImages({} as never, context);
    const warnings = log.lines.filter((l) => l.msg.includes("CRIListStreaming"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.fields?.bytes).toBe(first.length);
  });

  test("a list under the limit logs nothing", async () => {
    const { service, log } = await serviceOver([record({ id: id("1"), repoTags: ["a:1"] })]);
    await service.listImages({} as never, context);
    expect(log.lines.filter((l) => l.msg.includes("CRIListStreaming"))).toHaveLength(0);
  });
});

describe("StreamImages batches", () => {
  async function streamed(records: ReturnType<typeof record>[], request: object = {}) {
    const { service } = await serviceOver(records);
    const batches: Uint8Array[] = [];
    for await (const b of service.streamImages(request as never, context)) batches.push(b as Uint8Array);
    return batches.map((b) => runtime.v1.StreamImagesResponse.decode(b).images);
  }

  // Images of very different encoded sizes (one-, two- and three-byte length prefixes).
  const records = Array.from({ length: 12_001 }, (_, i) =>
    record({
      id: `sha256:${i.toString(16).padStart(64, "0")}`,
      repoTags: Array.from({ length: i % 500 === 0 ? 200 : 1 + (i % 3) }, (_, t) => `example.com/${"x".repeat(1 + (i % 200))}/app${i}:${t}`),
    }),
  );

  test("are the list's images in order, 5,000 at most per batch, each batch a valid message", async () => {
    const batches = await streamed(records);
    expect(batches.map((b) => b.length)).toEqual([5000, 5000, 2001]);
    expect(batches.flat().map((i) => i.id)).toEqual(records.map((r) => r.id));
    expect(batches.flat().map((i) => i.repoTags)).toEqual(records.map((r) => r.repoTags));
  });

  test("with a filter, and with no images: no empty batch", async () => {
    expect(await streamed([])).toEqual([]);
    const filtered = await streamed(records, { filter: { image: { image: records[7]!.id } } });
    expect(filtered.map((b) => b.map((i) => i.id))).toEqual([[records[7]!.id]]);
  });
});
