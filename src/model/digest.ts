// OCI content digests (image-spec descriptor.md). Every digest that comes from
// store content or from a request passes through here before it is used as a
// map key or, worse, a path: a value that does not match the grammar can never
// name a file outside blobs/.
import { createHash } from "node:crypto";
import { isRecord } from "./json";

/** Algorithms whose encoded length we know; others are refused, as go-digest does. */
const ENCODED_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** `algorithm ":" encoded`, the registered algorithms with lowercase hex of their exact length. */
export function isDigest(value: unknown): value is string {
  if (typeof value !== "string") return false;
  const colon = value.indexOf(":");
  if (colon <= 0) return false;
  const length = ENCODED_LENGTH[value.slice(0, colon)];
  if (length === undefined) return false;
  const encoded = value.slice(colon + 1);
  return encoded.length === length && /^[a-f0-9]+$/.test(encoded);
}

/** Splits a digest that isDigest() accepted into the parts of its blob path. */
export function digestParts(digest: string): { algorithm: string; encoded: string } {
  if (!isDigest(digest)) throw new Error(`invalid digest ${JSON.stringify(digest)}`);
  const colon = digest.indexOf(":");
  return { algorithm: digest.slice(0, colon), encoded: digest.slice(colon + 1) };
}

/** The sha256 of `data` as a digest, `sha256:<64 hex>`: every image ID, written manifest and config check. */
export function sha256Digest(data: Uint8Array | string): string {
  return `sha256:${sha256Hex(data)}`;
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * The chain IDs of a layer stack (image-spec config.md, "ChainID"): the first
 * is its diff ID, each next one sha256(parent chain ID + " " + diff ID).
 * containerd names snapshots by them, Docker its layerdb/sha256/<hex>.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const parent = out[out.length - 1];
    out.push(parent === undefined ? diffId : sha256Digest(`${parent} ${diffId}`));
  }
  return out;
}

/**
 * An image config's `rootfs.diff_ids`, or why they cannot be used. The one rule
 * for every reader (Docker's layerdb, re-created layers, docker-archive
 * members, the CRI's chain ID): each is `sha256:<64 hex>`, since each is looked
 * up or checked as sha256 (layerdb/sha256/<hex>, the mirror's hash of a layer).
 * A `rootfs` without `diff_ids` is an image without layers, as Docker writes it.
 */
export function rootfsDiffIds(config: unknown): string[] | string {
  const rootfs = isRecord(config) ? config.rootfs : undefined;
  const ids = isRecord(rootfs) ? (rootfs.diff_ids ?? []) : undefined;
  if (!Array.isArray(ids)) return "the config has no rootfs.diff_ids list";
  const bad = ids.find((d) => !isImageId(d));
  return bad === undefined ? (ids as string[]) : `the config has a diff ID that is not sha256: ${JSON.stringify(bad)}`;
}

/** Image IDs are `sha256:<64 hex>` across every backend, like containerd's. */
export const IMAGE_ID = /^sha256:[a-f0-9]{64}$/;

export function isImageId(value: unknown): value is string {
  return typeof value === "string" && IMAGE_ID.test(value);
}
