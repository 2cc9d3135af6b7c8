// The mirror's set of `open` bodies verified before (ContentBody.verifiedAs):
// a key is remembered only after a whole stream under it hashed to the
// digest, and a body whose key is remembered is opened trusted and not hashed.
import { describe, expect, test } from "bun:test";
import type { ContentBody } from "../../src/backend/contract";
import { bodyStream, hashOf, prepareBody, type ReadyBody } from "../../src/mirror/body";
import { VerifiedBodies } from "../../src/mirror/verified-bodies";
import { drain, memoryLogger } from "./helpers";

const data = new Uint8Array(1000).map((_, i) => (i * 7) & 255);
const digest = hashOf("sha256:" + "0".repeat(64), data);

/** An open() body under `key` (changing to `learned` once a stream ran), yielding `bytes`; records how it was opened. */
function keyed(key: string | undefined, bytes: Uint8Array = data, learned?: string) {
  const opens: (boolean | undefined)[] = [];
  let ran = false;
  const body: ContentBody = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    size: bytes.length,
    verifiedAs: () => (ran && learned !== undefined ? learned : key),
    async *open(start, _signal, trusted) {
      opens.push(trusted);
      for (let at = start; at < bytes.length; at += 100) yield bytes.slice(at, Math.min(at + 100, bytes.length));
      ran = true;
    },
  };
  return { body, opens };
}

async function ready(body: ContentBody): Promise<ReadyBody> {
  const prepared = await prepareBody(body, digest);
  if ("refusal" in prepared) throw new Error(prepared.refusal);
  return prepared.ready;
}

async function download(body: ContentBody, start = 0): Promise<{ bytes: Uint8Array; error?: string; trusted?: boolean }> {
  const r = await ready(body);
  const out = bodyStream(r, digest, { start, end: body.size - 1 }, new AbortController().signal, () => {}, memoryLogger());
  return { ...(await drain(out as ReadableStream<Uint8Array>)), trusted: r.trusted };
}

const unique = () => `key-${Math.random()}`;

describe("VerifiedBodies", () => {
  test("remembers (digest, key) pairs, least recently used dropped first", () => {
    const set = new VerifiedBodies(2);
    expect(set.has("sha256:a", "k1")).toBe(false);
    set.remember("sha256:a", "k1");
    set.remember("sha256:a", "k2");
    expect(set.has("sha256:a", "k1")).toBe(true); // k1 now the most recent
    expect(set.has("sha256:b", "k1")).toBe(false); // the key is only good for its digest
    set.remember("sha256:a", "k3");
    expect(set.has("sha256:a", "k2")).toBe(false);
    expect(set.has("sha256:a", "k1")).toBe(true);
    expect(set.has("sha256:a", "k3")).toBe(true);
  });
});

describe("open() bodies with verifiedAs", () => {
  test("hashed the first time; once that verified, the same key is opened trusted and not hashed", async () => {
    const key = unique();
    const first = keyed(key);
    expect(await download(first.body)).toEqual({ bytes: Buffer.from(data), trusted: false });
    expect(first.opens).toEqual([undefined]);
    const second = keyed(key);
    expect(await download(second.body)).toEqual({ bytes: Buffer.from(data), trusted: true });
    expect(second.opens).toEqual([true]);
    // Not hashed: wrong bytes under a trusted key go through (the body itself must refuse them).
    const wrong = Buffer.from(data);
    wrong[0]! ^= 1;
    const third = keyed(key, wrong);
    expect((await download(third.body)).bytes).toEqual(wrong);
    expect(third.opens).toEqual([true]);
  });

  test("a trusted body that finds a changed input before any byte left is opened again, hashed: the client sees nothing", async () => {
    const key = unique();
    await download(keyed(key).body);
    // Opened trusted, it refuses (as a re-created layer does for a file with a new ctime) after one
    // chunk, which the mirror still holds back; opened again untrusted, it is whole.
    const opens: (boolean | undefined)[] = [];
    const body: ContentBody = {
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      size: data.length,
      verifiedAs: () => key,
      async *open(start, _signal, trusted) {
        opens.push(trusted);
        for (let at = start; at < data.length; at += 100) {
          if (trusted && at === 100) throw new Error("not the file the layer was verified with");
          yield data.slice(at, Math.min(at + 100, data.length));
        }
      },
    };
    expect(await download(body)).toEqual({ bytes: Buffer.from(data), trusted: true });
    expect(opens).toEqual([true, undefined]);
    // Once a chunk has left, the same refusal aborts the download (a client never gets a mix).
    const late: ContentBody = {
      ...body,
      async *open(start, _signal, trusted) {
        for (let at = start; at < data.length; at += 100) {
          if (trusted && at === 500) throw new Error("not the file the layer was verified with");
          yield data.slice(at, Math.min(at + 100, data.length));
        }
      },
    };
    const cut = await download(late);
    expect(cut.error).toContain("not the file the layer was verified with");
    expect(cut.bytes.length).toBeLessThan(data.length);
  });

  test("a stream that hashes wrong is aborted and its key not remembered", async () => {
    const key = unique();
    const wrong = Buffer.from(data);
    wrong[999]! ^= 1;
    const bad = await download(keyed(key, wrong).body);
    expect(bad.error).toContain("hashes to");
    expect(bad.bytes.length).toBeLessThan(data.length);
    const next = keyed(key);
    expect((await download(next.body)).trusted).toBe(false);
    expect(next.opens).toEqual([undefined]);
  });

  test("the key remembered is the one the body gives after its stream (the inputs it read)", async () => {
    const before = unique();
    const learned = unique();
    await download(keyed(before, data, learned).body);
    expect((await download(keyed(before).body)).trusted).toBe(false);
    expect((await download(keyed(learned).body)).trusted).toBe(true);
  });

  test("no key, or a part of the body: hashed or not as before, and nothing remembered", async () => {
    const none = keyed(undefined);
    expect(await download(none.body)).toEqual({ bytes: Buffer.from(data), trusted: false });
    const key = unique();
    expect((await download(keyed(key).body, 200)).bytes).toEqual(Buffer.from(data.subarray(200)));
    expect((await download(keyed(key).body)).trusted).toBe(false);
  });
});
