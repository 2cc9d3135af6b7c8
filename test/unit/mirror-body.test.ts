// The mirror's bodies: bytes and files checked before anything is sent, and
// an open() body verified on the way, its last chunk held back until the
// digest is right (the stream errors instead, which aborts the connection).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ContentBody } from "../../src/backend/contract";
import { bodyRefusal, bodyStream, descriptorHeaders, hashOf } from "../../src/mirror/body";
import { memoryLogger } from "./helpers";

const data = new Uint8Array(1000).map((_, i) => i & 255);
const digest = hashOf("sha256:" + "0".repeat(64), data);
const LAYER = "application/vnd.oci.image.layer.v1.tar";

/** An open() body yielding `data` in 100-byte chunks, changed by `mode` at the end. */
function opened(mode: "good" | "throw" | "short" | "wrong" = "good"): ContentBody {
  return {
    mediaType: LAYER,
    size: data.length,
    async *open(start) {
      for (let at = start; at < data.length; at += 100) {
        const piece = data.slice(at, Math.min(at + 100, data.length));
        const last = at + 100 >= data.length;
        if (last && mode === "throw") throw new Error("disk gone");
        if (last && mode === "short") return;
        if (last && mode === "wrong") piece[0]! ^= 1;
        yield piece;
      }
    },
  };
}

/** Reads a stream to its end: the bytes, and the error if it ended in one. */
async function drain(stream: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; error?: string }> {
  const parts: Uint8Array[] = [];
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: (e as Error).message };
  }
  return { bytes: Buffer.concat(parts) };
}

function stream(body: ContentBody, start = 0, end = data.length - 1) {
  let released = 0;
  const out = bodyStream(body, digest, { start, end }, new AbortController().signal, () => released++, memoryLogger());
  return { stream: out as ReadableStream<Uint8Array>, released: () => released };
}

describe("open() bodies", () => {
  test("the whole body, verified, and the store released once at the end", async () => {
    const s = stream(opened());
    expect(await drain(s.stream)).toEqual({ bytes: Buffer.from(data) });
    expect(s.released()).toBe(1);
  });
  for (const [mode, reason] of [["throw", "open() failed: disk gone"], ["short", "ended after 900 of 1000"], ["wrong", "hashes to"]] as const) {
    test(`${mode}: errors before the last chunk, so the client never gets it all`, async () => {
      const s = stream(opened(mode));
      const { bytes, error } = await drain(s.stream);
      expect(error).toContain(reason);
      expect(bytes.length).toBeLessThan(data.length);
      expect(Buffer.from(bytes)).toEqual(Buffer.from(data.subarray(0, bytes.length)));
      expect(s.released()).toBe(1);
    });
  }
  test("a part: from start, cut at end, the rest not read", async () => {
    const s = stream(opened(), 150, 420);
    expect(await drain(s.stream)).toEqual({ bytes: Buffer.from(data.subarray(150, 421)) });
    expect(s.released()).toBe(1);
  });
  test("a cancelled body is released and stops reading", async () => {
    const s = stream(opened());
    const reader = s.stream.getReader();
    await reader.read();
    await reader.cancel();
    expect(s.released()).toBe(1);
  });
});

describe("bytes and files", () => {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-body-"));
  const file = join(dir, "pack");
  writeFileSync(file, Buffer.concat([Buffer.from("HEAD"), data]));
  test("bytes must hash to the digest; a file region must be there", () => {
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, bytes: data }, digest)).toBeUndefined();
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, bytes: data.slice().fill(0) }, digest)).toContain("hash to");
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, file: { path: file, offset: 4 } }, digest)).toBeUndefined();
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, file: { path: file, offset: 5 } }, digest)).toContain("fewer than");
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, file: { path: dir, offset: 0 } }, digest)).toContain("not a regular file");
    expect(bodyRefusal({ mediaType: LAYER, size: 1000, file: { path: join(dir, "gone"), offset: 0 } }, digest)).toContain("ENOENT");
  });
  test("a file region is sent from the file, released at once", async () => {
    let released = 0;
    const blob = bodyStream({ mediaType: LAYER, size: 1000, file: { path: file, offset: 4 } }, digest, { start: 10, end: 19 }, new AbortController().signal, () => released++, memoryLogger());
    expect(Buffer.from(await (blob as Blob).arrayBuffer())).toEqual(Buffer.from(data.subarray(10, 20)));
    expect(released).toBe(1);
    rmSync(dir, { recursive: true, force: true });
  });
  test("one place makes a descriptor's headers", () => {
    expect(descriptorHeaders({ mediaType: LAYER, digest, size: 1000 }, 10)).toEqual({
      "Docker-Distribution-API-Version": "registry/2.0",
      "Content-Type": LAYER,
      "Content-Length": "10",
      "Docker-Content-Digest": digest,
    });
  });
});
