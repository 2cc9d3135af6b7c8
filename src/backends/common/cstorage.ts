// Pure helpers for containers/storage image and layer records (images.json,
// layers.json), and the rules CRI-O applies to them. iSulad's per-image
// images.json object has the same shape: its backend parses it here too.
// Nothing here touches the filesystem: callers read through common/files.ts.
// See docs/backends.md#containers-storage.
import { isDigest } from "../../model/digest";
import { parseNormalizedNamed } from "../../model/reference";
import { isRecord } from "../../model/json";

/** A c/storage image or layer ID (each names its directory or files): 64 lowercase hex. */
export const STORAGE_ID = /^[a-f0-9]{64}$/;

/** c/storage ImageDigestBigDataKey: the image's own manifest. */
export const MANIFEST_KEY = "manifest";

/** One images.json entry (containers/storage images.go, struct Image), the fields read here. */
export interface StorageImage {
  id: string;
  /** The first manifest digest the image was stored with (may be a list's). */
  digest?: string;
  names: string[];
  namesHistory: string[];
  /** Top layer; absent for manifest-list records (buildah manifest create). */
  layer?: string;
  /** c/image's metadata JSON string (signature sizes). */
  metadata?: string;
  bigDataNames: string[];
  bigDataSizes: Record<string, number>;
  bigDataDigests: Record<string, string>;
  created?: string;
  /** iSulad's own total (storage.c; c/storage records none). */
  size?: number;
}

/** One layers.json entry (containers/storage layers.go, struct Layer), the fields read here. */
export interface StorageLayer {
  id: string;
  parent?: string;
  /** `diff-digest`: without it c/image cannot size the layer. */
  diffDigest?: string;
  /** `diff-size`, the uncompressed tar's exact length; omitted by c/storage when 0, -1 when unknown (a partial pull). */
  diffSize: number;
  /** `flags.incomplete`: the layer is still being created. */
  incomplete: boolean;
}

function stringList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new Error(`${field} is not a list of strings`);
  return v;
}

function optionalString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new Error(`${field} is not a string`);
  return v;
}

function numberMap(v: unknown, field: string): Record<string, number> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new Error(`${field} is not an object`);
  const out: Record<string, number> = {};
  for (const k in v) {
    const n = v[k];
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) throw new Error(`${field}[${JSON.stringify(k)}] is not a size`);
    out[k] = n;
  }
  return out;
}

function digestMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new Error(`${field} is not an object`);
  const out: Record<string, string> = {};
  // Validated where used: most items' digests are never looked at.
  for (const k in v) {
    const d = v[k];
    if (typeof d === "string") out[k] = d;
  }
  return out;
}

/** Parses one images.json entry; throws an Error naming the bad field. */
export function parseStorageImage(raw: unknown): StorageImage {
  if (!isRecord(raw)) throw new Error("not an object");
  if (typeof raw.id !== "string" || !STORAGE_ID.test(raw.id)) throw new Error(`id ${JSON.stringify(raw.id)} is not 64 hex`);
  const digest = optionalString(raw.digest, "digest");
  return {
    id: raw.id,
    digest: digest !== undefined && isDigest(digest) ? digest : undefined,
    names: stringList(raw.names, "names"),
    namesHistory: stringList(raw["names-history"], "names-history"),
    layer: optionalString(raw.layer, "layer"),
    metadata: optionalString(raw.metadata, "metadata"),
    bigDataNames: stringList(raw["big-data-names"], "big-data-names"),
    bigDataSizes: numberMap(raw["big-data-sizes"], "big-data-sizes"),
    bigDataDigests: digestMap(raw["big-data-digests"], "big-data-digests"),
    created: optionalString(raw.created, "created"),
    size: typeof raw.size === "number" && Number.isSafeInteger(raw.size) && raw.size > 0 ? raw.size : undefined,
  };
}

/** Parses one layers.json entry; throws an Error naming the bad field. */
export function parseStorageLayer(raw: unknown): StorageLayer {
  if (!isRecord(raw)) throw new Error("not an object");
  if (typeof raw.id !== "string" || raw.id === "") throw new Error("id is not a string");
  const size = raw["diff-size"];
  if (size !== undefined && (typeof size !== "number" || !Number.isSafeInteger(size))) throw new Error("diff-size is not an integer");
  const flags = raw.flags;
  return {
    id: raw.id,
    parent: optionalString(raw.parent, "parent"),
    diffDigest: optionalString(raw["diff-digest"], "diff-digest"),
    diffSize: size ?? 0,
    incomplete: isRecord(flags) && flags.incomplete === true,
  };
}

/** An image name that parsed as a reference, with the parts the naming rules use. */
export interface StorageName {
  name: string;
  repository: string;
  digest?: string;
}

/**
 * CRI-O sortNamesByType: a name ending in "@sha256:<64 hex>" is a repo
 * digest, any other name a tag. Names that are not references at all are
 * returned apart, for the caller to report. Each name is parsed once here.
 */
export function sortNamesByType(names: readonly string[]): { tags: StorageName[]; digested: StorageName[]; invalid: string[] } {
  const tags: StorageName[] = [];
  const digested: StorageName[] = [];
  const invalid: string[] = [];
  for (const name of names) {
    let parsed: StorageName;
    try {
      const ref = parseNormalizedNamed(name);
      parsed = { name, repository: ref.repository, digest: ref.digest };
    } catch {
      invalid.push(name);
      continue;
    }
    if (parsed.digest !== undefined && /@sha256:[a-f0-9]{64}$/.test(name)) digested.push(parsed);
    else tags.push(parsed);
  }
  return { tags, digested, invalid };
}

/**
 * The legacy flat `signature-sizes` list in c/image's metadata string
 * (storage_src.go getSize adds these; newer signatures are big-data items and
 * counted with them).
 */
export function signatureSizes(metadata: string | undefined): number {
  if (metadata === undefined) return 0;
  let parsed: unknown;
  try {
    parsed = JSON.parse(metadata);
  } catch {
    return 0;
  }
  if (!isRecord(parsed) || !Array.isArray(parsed["signature-sizes"])) return 0;
  return parsed["signature-sizes"].reduce((n: number, s: unknown) => n + (typeof s === "number" && s > 0 ? s : 0), 0);
}

/** The sum of the image's big-data sizes (manifests, config, signatures). */
export function bigDataSize(image: StorageImage): number {
  return image.bigDataNames.reduce((n, name) => n + (image.bigDataSizes[name] ?? 0), 0);
}

export type LayerChain =
  | { ok: true; size: number; layers: StorageLayer[] }
  | { ok: false; reason: "missing" | "incomplete" | "cycle"; layer: string };

/**
 * Walks `parent` from the top layer and sums `diff-size` (c/image
 * storage_src.go getSize); `layers` lists the chain from the base up, the
 * order of the config's diff_ids. Stops at a missing or incomplete layer, or
 * a parent cycle, none of which a healthy store has.
 */
export function layerChainSize(top: string, layers: ReadonlyMap<string, StorageLayer>): LayerChain {
  let size = 0;
  const chain: StorageLayer[] = [];
  const seen = new Set<string>();
  for (let id: string | undefined = top; id !== undefined; ) {
    if (seen.has(id)) return { ok: false, reason: "cycle", layer: id };
    seen.add(id);
    const layer = layers.get(id);
    if (!layer) return { ok: false, reason: "missing", layer: id };
    if (layer.incomplete) return { ok: false, reason: "incomplete", layer: id };
    size += Math.max(0, layer.diffSize);
    chain.push(layer);
    id = layer.parent;
  }
  return { ok: true, size, layers: chain.reverse() };
}
