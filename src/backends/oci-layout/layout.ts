// Reading an OCI image layout (image-spec image-layout.md): index.json, nested
// indexes and manifests from blobs/<alg>/<encoded>. Pure reading and
// interpretation; the backend object in index.ts adds caching and watching.
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Platform } from "../../backend/contract";
import { digestParts, isDigest } from "../../model/digest";

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

const INDEX_TYPES: ReadonlySet<string> = new Set([MEDIA.ociIndex, MEDIA.dockerList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MEDIA.ociManifest, MEDIA.dockerManifest]);

/** Manifests, indexes and configs are small; anything bigger is not one (or is hostile). */
export const MAX_JSON_BYTES = 16 * 1024 * 1024;
/** Nested indexes deeper than this are refused (a cycle would otherwise recurse forever). */
const MAX_INDEX_DEPTH = 8;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface Manifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface IndexDocument {
  mediaType?: string;
  manifests: Descriptor[];
}

/** A problem with one entry or blob: the entry is skipped and the problem logged. */
export class LayoutProblem extends Error {
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(message);
    this.name = "LayoutProblem";
  }
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && INDEX_TYPES.has(mediaType);
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_TYPES.has(mediaType);
}

/** Reads a JSON file of bounded size. */
export function readJsonFile(path: string): { value: unknown; bytes: Buffer } {
  let size: number;
  try {
    const st = statSync(path);
    // A FIFO or device here would block a read forever; stores hold regular files.
    if (!st.isFile()) throw new LayoutProblem("not a regular file", path);
    size = st.size;
  } catch (e) {
    if (e instanceof LayoutProblem) throw e;
    throw new LayoutProblem(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
  if (size > MAX_JSON_BYTES) throw new LayoutProblem(`larger than ${MAX_JSON_BYTES} bytes`, path);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new LayoutProblem(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
  try {
    return { value: JSON.parse(bytes.toString("utf8")), bytes };
  } catch (e) {
    throw new LayoutProblem(`not valid JSON: ${(e as Error).message}`, path);
  }
}

/** The path of a blob. The digest grammar check is what keeps it inside blobs/. */
export function blobPath(root: string, digest: string): string {
  const { algorithm, encoded } = digestParts(digest);
  return join(root, "blobs", algorithm, encoded);
}

/** Reads a JSON blob and checks that its bytes hash to the digest that named it. */
export function readJsonBlob(root: string, digest: string): { value: unknown; size: number } {
  const path = blobPath(root, digest);
  const { value, bytes } = readJsonFile(path);
  const { algorithm, encoded } = digestParts(digest);
  const actual = createHash(algorithm).update(bytes).digest("hex");
  if (actual !== encoded) throw new LayoutProblem(`content does not match its digest (${algorithm}:${actual})`, path);
  return { value, size: bytes.length };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (!isObject(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === "string") out[k] = x;
  return out;
}

function parsePlatform(v: unknown): Platform | undefined {
  if (!isObject(v) || typeof v.os !== "string" || typeof v.architecture !== "string") return undefined;
  return { os: v.os, architecture: v.architecture, variant: typeof v.variant === "string" ? v.variant : undefined };
}

/** Parses a descriptor; undefined when it is not one (bad digest, missing size). */
export function parseDescriptor(v: unknown): Descriptor | undefined {
  if (!isObject(v) || !isDigest(v.digest)) return undefined;
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0) return undefined;
  return {
    mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined,
    digest: v.digest,
    size: v.size,
    annotations: stringMap(v.annotations),
    platform: parsePlatform(v.platform),
  };
}

export function parseIndex(v: unknown, path: string): { index: IndexDocument; invalid: number } {
  if (!isObject(v) || !Array.isArray(v.manifests)) throw new LayoutProblem("not an image index (no manifests array)", path);
  const manifests: Descriptor[] = [];
  let invalid = 0;
  for (const entry of v.manifests) {
    const d = parseDescriptor(entry);
    if (d) manifests.push(d);
    else invalid++;
  }
  return { index: { mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined, manifests }, invalid };
}

export function parseManifest(v: unknown, path: string): Manifest {
  if (!isObject(v)) throw new LayoutProblem("manifest is not an object", path);
  const config = parseDescriptor(v.config);
  if (!config) throw new LayoutProblem("manifest has no valid config descriptor", path);
  if (!Array.isArray(v.layers)) throw new LayoutProblem("manifest has no layers array", path);
  const layers: Descriptor[] = [];
  for (const l of v.layers) {
    const d = parseDescriptor(l);
    if (!d) throw new LayoutProblem("manifest has an invalid layer descriptor", path);
    layers.push(d);
  }
  return { mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined, config, layers, annotations: stringMap(v.annotations) };
}

/**
 * Picks the host's manifest from an index: exact os/architecture/variant
 * first, then the same os/architecture when either side leaves the variant
 * out (arm64 is v8 unless it says otherwise). Attestation entries
 * (os "unknown") and unknown media types are never picked.
 */
export function pickPlatform(manifests: readonly Descriptor[], host: Platform): Descriptor | undefined {
  const candidates = manifests.filter(
    (d) => (isManifestType(d.mediaType) || isIndexType(d.mediaType)) && d.platform?.os !== "unknown",
  );
  const variantOf = (p: Platform) => p.variant ?? (p.architecture === "arm64" ? "v8" : undefined);
  const sameArch = candidates.filter((d) => d.platform?.os === host.os && d.platform.architecture === host.architecture);
  return (
    sameArch.find((d) => variantOf(d.platform!) === variantOf(host)) ??
    sameArch.find((d) => d.platform!.variant === undefined || host.variant === undefined) ??
    // An index entry with no platform at all is taken only when nothing says otherwise.
    (candidates.length === 1 && candidates[0]!.platform === undefined ? candidates[0] : undefined)
  );
}

export { MAX_INDEX_DEPTH };
