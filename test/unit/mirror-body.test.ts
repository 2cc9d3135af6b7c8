// The mirror's bodies: bytes and files checked before anything is sent, and
// an open() body verified on the way, its last chunk held back until the
// digest is right (the stream errors instead, which aborts the connection).
// A file is hashed before anything is sent, then sent by the OS (sendfile);
// one changed under 2 s ago (it may still be changing) is streamed that way
// instead, from the descriptor its check opened.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, openSync, renameSync, rmSync, utimesSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ContentBody } from "../../src/backend/contract";
import { bodyStream, descriptorHeaders, hashOf, prepareBody, type ReadyBody } from "../../src/mirror/body";
import { drain, memoryLogger } from "./helpers";

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

async function ready(body: ContentBody, want = digest, sending = true): Promise<ReadyBody> {
  const prepared = await prepareBody(body, want, sending);
  if ("refusal" in prepared) throw new Error(prepared.refusal);
  return prepared.ready;
}

async function refusal(body: ContentBody, want = digest): Promise<string | undefined> {
  const prepared = await prepareBody(body, want, false);
  return "refusal" in prepared ? prepared.refusal : (prepared.ready.close(), undefined);
}

function stream(body: ContentBody | ReadyBody, start = 0, end = data.length - 1, want = digest) {
  if (!("sendfile" in body)) throw new Error("prepare the body first");
  let released = 0;
  const out = bodyStream(body, want, { start, end }, new AbortController().signal, () => released++, memoryLogger());
  return { stream: out as ReadableStream<Uint8Array>, released: () => released };
}

describe("open() bodies", () => {
  test("the whole body, verified, and the store released once at the end", async () => {
    const s = stream(await ready(opened()));
    expect(await drain(s.stream)).toEqual({ bytes: Buffer.from(data) });
    expect(s.released()).toBe(1);
  });
  for (const [mode, reason] of [["throw", "open() failed: disk gone"], ["short", "ended after 900 of 1000"], ["wrong", "hashes to"]] as const) {
    test(`${mode}: errors before the last chunk, so the client never gets it all`, async () => {
      const s = stream(await ready(opened(mode)));
      const { bytes, error } = await drain(s.stream);
      expect(error).toContain(reason);
      expect(bytes.length).toBeLessThan(data.length);
      expect(Buffer.from(bytes)).toEqual(Buffer.from(data.subarray(0, bytes.length)));
      expect(s.released()).toBe(1);
    });
  }
  test("a part: from start, cut at end, the rest not read", async () => {
    const s = stream(await ready(opened()), 150, 420);
    expect(await drain(s.stream)).toEqual({ bytes: Buffer.from(data.subarray(150, 421)) });
    expect(s.released()).toBe(1);
  });
  test("a cancelled body is released and stops reading", async () => {
    const s = stream(await ready(opened()));
    const reader = s.stream.getReader();
    await reader.read();
    await reader.cancel();
    expect(s.released()).toBe(1);
  });
});

describe("bytes and files", () => {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-body-"));
  const file = join(dir, "pack");
  // Over READ_WHOLE_BYTES (1 MiB), so a first GET hashes it before anything is sent (or, just written, streams it).
  const big = new Uint8Array(1536 * 1024).map((_, i) => (i * 7) & 255);
  const bigDigest = hashOf(digest, big);
  const region = (path = file, offset = 4, size = big.length): ContentBody => ({ mediaType: LAYER, size, file: { path, offset } });
  /** (Re)writes the pack file in place: a new ctime, so a new identity. */
  const writePack = () => writeFileSync(file, Buffer.concat([Buffer.from("HEAD"), big]));
  const readyBig = (sending = true) => ready(region(), bigDigest, sending);
  writePack();
  test("bytes must hash to the digest; a file region must be there", async () => {
    expect(await refusal({ mediaType: LAYER, size: 1000, bytes: data })).toBeUndefined();
    expect(await refusal({ mediaType: LAYER, size: 1000, bytes: data.slice().fill(0) })).toContain("hash to");
    expect(await refusal(region(), bigDigest)).toBeUndefined();
    expect(await refusal(region(file, 5), bigDigest)).toContain("fewer than");
    expect(await refusal(region(dir, 0), bigDigest)).toContain("not a regular file");
    expect(await refusal(region(join(dir, "gone"), 0), bigDigest)).toContain("ENOENT");
  });
  test("a small file region not verified is read whole and hashed before anything is sent", async () => {
    const small = await ready(region(file, 4, 1000), hashOf(digest, big.subarray(0, 1000)));
    expect(Buffer.from(small.body.bytes!)).toEqual(Buffer.from(big.subarray(0, 1000)));
    expect((await prepareBody(region(file, 4, 1000), digest)) as object).toHaveProperty("refusal");
  });
  test("a big file just written is streamed from the descriptor its check opened, hashed", async () => {
    writePack();
    const r = await readyBig();
    expect(r.sendfile).toBe(false);
    // Replaced by rename after the check: the opened file's bytes are still the old ones.
    writeFileSync(join(dir, "other"), Buffer.alloc(big.length + 4, 1));
    renameSync(join(dir, "other"), file);
    const s = stream(r, 0, big.length - 1, bigDigest);
    expect(Buffer.from((await drain(s.stream)).bytes).equals(Buffer.from(big))).toBe(true);
    expect(s.released()).toBe(1);
    writePack();
  });
  test("a file changed in place under its stream never ends cleanly", async () => {
    writePack();
    const r = await readyBig();
    const fd = openSync(file, "r+");
    writeSync(fd, Buffer.from([0xff]), 0, 1, 1_500_000);
    closeSync(fd);
    const { bytes, error } = await drain(stream(r, 0, big.length - 1, bigDigest).stream);
    expect(error).toContain("hashes to");
    expect(bytes.length).toBeLessThan(big.length);
    writePack();
  });
  test("a part is streamed too, and the file closed once it is sent or not", async () => {
    const r = await readyBig();
    expect(Buffer.from((await drain(stream(r, 10, 19, bigDigest).stream)).bytes)).toEqual(Buffer.from(big.subarray(10, 20)));
    const unsent = await readyBig(false);
    unsent.close();
    unsent.close();
  });
  test("a file just written is not trusted after one verified download: it is hashed again", async () => {
    writePack();
    await drain(stream(await readyBig(), 0, big.length - 1, bigDigest).stream);
    expect((await readyBig(false)).sendfile).toBe(false);
  });
  test("a big file changed over 2 s ago is hashed before anything is sent, then sent from the file", async () => {
    writePack();
    await Bun.sleep(2100);
    // Wrong bytes: refused before any header, so the client gets a 404, not a broken body.
    const wrong = hashOf(digest, big.subarray(1));
    expect(await prepareBody(region(), wrong)).toEqual({ refusal: expect.stringContaining("its bytes hash to") });
    const r = await readyBig();
    expect(r.sendfile).toBe(true);
    let released = 0;
    const part = bodyStream(r, bigDigest, { start: 10, end: 19 }, new AbortController().signal, () => released++, memoryLogger());
    // The identity verified goes with it: the sender sends the file only if it still has it.
    expect(part).toEqual({ path: file, start: 14, end: 23, identity: expect.stringMatching(/^\d+:\d+:1572868:/) });
    expect(released).toBe(1);
    // Any change makes a new identity: streamed, hashed, again.
    utimesSync(file, new Date(), new Date());
    expect((await readyBig()).sendfile).toBe(false);
  });
  test("first GETs of a file at once share one hash, and all go by sendfile", async () => {
    writePack();
    await Bun.sleep(2100);
    const all = await Promise.all([readyBig(), readyBig(), readyBig()]);
    expect(all.map((r) => r.sendfile)).toEqual([true, true, true]);
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
