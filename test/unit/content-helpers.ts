// Reading a ContentBody the way the mirror does (a file region, bytes, or a
// stream opened at an offset) and checking it against its digest, for the
// content-hook tests of every backend. Written from the contract
// (sdk/imagelet-plugin.ts), not from any backend's code.
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import type { ContentBody } from "../../src/backend/contract";

export const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/** The body's bytes from `start` to its end. */
export async function bodyBytes(body: ContentBody, start = 0): Promise<Buffer> {
  const set = [body.file, body.bytes, body.open].filter((x) => x !== undefined).length;
  if (set !== 1) throw new Error(`exactly one of file, bytes, open must be set (${set} are)`);
  if (body.bytes) return Buffer.from(body.bytes).subarray(start);
  if (body.file) {
    const fd = openSync(body.file.path, "r");
    try {
      const out = Buffer.alloc(body.size - start);
      let n = 0;
      while (n < out.length) {
        const got = readSync(fd, out, n, out.length - n, body.file.offset + start + n);
        if (got === 0) throw new Error(`${body.file.path} ends ${out.length - n} bytes early`);
        n += got;
      }
      return out;
    } finally {
      closeSync(fd);
    }
  }
  const chunks: Buffer[] = [];
  for await (const chunk of body.open!(start, new AbortController().signal)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Digests no store may turn into a path. */
export const MALFORMED_DIGESTS = [
  "sha256:../../../../etc/passwd",
  `sha256:${"A".repeat(64)}`,
  `sha256:${"a".repeat(63)}`,
  `sha256:${"a".repeat(64)}/..`,
  `md5:${"a".repeat(32)}`,
  "sha256:",
  "",
  `../sha256:${"a".repeat(64)}`,
];

type ContentHook = (id: string, digest: string) => ContentBody | undefined | Promise<ContentBody | undefined>;

const DOCUMENT = /(manifest|index)\.v1\+json$|manifest\.list\.v2\+json$|manifest\.v2\+json$/;

/**
 * Fetches an image's target and everything it names, as a client pulling it
 * would, checking each body against its digest and size. `missing` lists
 * digests the store is known not to have (they must give undefined); any
 * other undefined is a failure. Returns the digests served.
 */
export async function pullAll(content: ContentHook, id: string, target: { digest: string; size: number; mediaType: string }, missing: ReadonlySet<string> = new Set()): Promise<string[]> {
  const served: string[] = [];
  const queue = [target];
  const seen = new Set<string>();
  while (queue.length > 0) {
    const d = queue.shift()!;
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    const body = await content(id, d.digest);
    if (missing.has(d.digest)) {
      if (body !== undefined) throw new Error(`${d.digest} is not in the store, yet served`);
      continue;
    }
    if (!body) throw new Error(`${d.digest} (${d.mediaType}) reachable from ${id} but not served`);
    const bytes = await bodyBytes(body);
    if (sha256(bytes) !== d.digest) throw new Error(`${d.digest}: served bytes hash to ${sha256(bytes)}`);
    if (bytes.length !== d.size || body.size !== d.size) throw new Error(`${d.digest}: ${bytes.length} bytes, body.size ${body.size}, descriptor ${d.size}`);
    if (body.mediaType !== d.mediaType) throw new Error(`${d.digest}: media type ${body.mediaType}, descriptor ${d.mediaType}`);
    served.push(d.digest);
    if (DOCUMENT.test(d.mediaType)) {
      const doc = JSON.parse(bytes.toString("utf8"));
      for (const child of [...(doc.manifests ?? []), ...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) queue.push(child);
    }
  }
  return served;
}

/**
 * The repo digests the CRI must report for an image served through a manifest
 * imagelet writes (docs/mirror.md, "Manifests imagelet writes"), worked out
 * here from that text and not from src: the config and each `diff_id`'s layer
 * are fetched through the content hook and checked against their digests (so
 * their lengths are the real ones), the manifest is written by the documented
 * rule, and every repository in `names` gets `@<its digest>`.
 */
export async function writtenRepoDigestsOf(content: ContentHook, id: string, names: readonly string[]): Promise<string[]> {
  const fetch = async (digest: string) => {
    const body = await content(id, digest);
    if (!body) throw new Error(`${digest} of ${id} is not served`);
    const bytes = await bodyBytes(body);
    if (sha256(bytes) !== digest) throw new Error(`${digest}: served bytes hash to ${sha256(bytes)}`);
    return bytes;
  };
  const config = await fetch(id);
  const diffIds: string[] = JSON.parse(config.toString("utf8")).rootfs.diff_ids;
  const layers = [];
  for (const diffId of diffIds) layers.push(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"${diffId}","size":${(await fetch(diffId)).length}}`);
  const manifest =
    `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
    `"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"${id}","size":${config.length}},"layers":[${layers.join(",")}]}`;
  const digest = sha256(Buffer.from(manifest));
  // A name's repository: everything before its digest, or before the tag's ":" after the last "/".
  const repository = (name: string) => {
    const bare = name.split("@")[0]!;
    const colon = bare.lastIndexOf(":");
    return colon > bare.lastIndexOf("/") ? bare.slice(0, colon) : bare;
  };
  return [...new Set(names.map((n) => `${repository(n)}@${digest}`))].sort();
}
