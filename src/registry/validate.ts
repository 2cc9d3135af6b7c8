// Validation of what a backend returns. A backend is untrusted input (a
// third-party plugin, or a store someone else writes), so every record is
// checked and its names normalized before it can reach the merged view.
import type { ContentDescriptor, ImageKind, ImageRecord } from "../backend/contract";
import { isDigest, isImageId } from "../model/digest";
import { formatReference, parseNormalizedNamed, quote, taggedReference } from "../model/reference";

declare const validated: unique symbol;

/** A record that passed validateRecord(): references normalized, fields checked. Only validateRecord makes one. */
export type ValidRecord = ImageRecord & { readonly [validated]: true };

export class MalformedRecordError extends Error {
  constructor(index: number, reason: string) {
    super(`record ${index}: ${reason}`);
    this.name = "MalformedRecordError";
  }
}

const KINDS: ReadonlySet<string> = new Set<ImageKind>(["oci", "artifact", "embedded"]);

function isStringMap(v: unknown): v is Record<string, string> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string");
}

function normalizeTag(value: unknown): string {
  if (typeof value !== "string") throw new Error(`repoTags entry is not a string`);
  const ref = parseNormalizedNamed(value);
  if (ref.digest !== undefined) throw new Error(`repoTags entry ${quote(value)} has a digest`);
  return taggedReference(ref);
}

function normalizeRepoDigest(value: unknown): string {
  if (typeof value !== "string") throw new Error(`repoDigests entry is not a string`);
  const ref = parseNormalizedNamed(value);
  if (ref.digest === undefined) throw new Error(`repoDigests entry ${quote(value)} has no digest`);
  return formatReference({ repository: ref.repository, digest: ref.digest });
}

/**
 * image-spec's media type grammar (descriptor.md, RFC 6838): a `Content-Type`
 * the mirror sends as given, so nothing else (no parameters, no line break) passes.
 */
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export function isMediaType(value: unknown): value is string {
  return typeof value === "string" && MEDIA_TYPE.test(value);
}

/** The three fields of a descriptor, checked; a copy, so nothing else the backend put in the object travels on. */
function validateTarget(raw: unknown): ContentDescriptor {
  if (typeof raw !== "object" || raw === null) throw new Error("target is not an object");
  const t = raw as Partial<ContentDescriptor>;
  if (!isDigest(t.digest)) throw new Error(`target.digest ${quote(String(t.digest))} is not a digest`);
  if (!isMediaType(t.mediaType)) throw new Error(`target.mediaType ${quote(String(t.mediaType))} is not a media type`);
  if (typeof t.size !== "number" || !Number.isSafeInteger(t.size) || t.size <= 0) throw new Error(`target.size ${quote(String(t.size))} is not a positive integer`);
  return { mediaType: t.mediaType, digest: t.digest, size: t.size };
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** Validates one record; throws an Error whose message names the bad field. */
export function validateRecord(raw: unknown): ValidRecord {
  if (typeof raw !== "object" || raw === null) throw new Error("not an object");
  const r = raw as Partial<ImageRecord>;
  if (!isImageId(r.id)) throw new Error(`id ${quote(String(r.id))} is not sha256:<64 hex>`);
  if (!Array.isArray(r.repoTags)) throw new Error("repoTags is not an array");
  if (!Array.isArray(r.repoDigests)) throw new Error("repoDigests is not an array");
  if (typeof r.size !== "number" || !Number.isSafeInteger(r.size) || r.size <= 0) {
    throw new Error(`size ${quote(String(r.size))} is not a positive integer`);
  }
  if (typeof r.kind !== "string" || !KINDS.has(r.kind)) throw new Error(`kind ${quote(String(r.kind))} is not oci, artifact or embedded`);
  if (r.user !== undefined && typeof r.user !== "string") throw new Error("user is not a string");
  if (r.created !== undefined && typeof r.created !== "string") throw new Error("created is not a string");
  if (r.labels !== undefined && !isStringMap(r.labels)) throw new Error("labels is not a string map");
  if (r.annotations !== undefined && !isStringMap(r.annotations)) throw new Error("annotations is not a string map");
  if (r.source !== undefined && typeof r.source !== "string") throw new Error("source is not a string");
  if (r.removable !== undefined && typeof r.removable !== "boolean") throw new Error("removable is not a boolean");
  if (r.pinned !== undefined && typeof r.pinned !== "boolean") throw new Error("pinned is not a boolean");
  const record: ImageRecord = {
    id: r.id,
    repoTags: unique(r.repoTags.map(normalizeTag)),
    repoDigests: unique(r.repoDigests.map(normalizeRepoDigest)),
    size: r.size,
    user: r.user,
    created: r.created,
    labels: r.labels,
    annotations: r.annotations,
    platform: r.platform,
    config: r.config,
    manifest: r.manifest,
    kind: r.kind,
    source: r.source,
    removable: r.removable,
    pinned: r.pinned,
    target: r.target === undefined ? undefined : validateTarget(r.target),
  };
  return record as ValidRecord;
}

/** Validates a whole list; one bad record rejects the list (the last good snapshot is kept). */
export function validateRecords(raw: unknown): ValidRecord[] {
  if (!Array.isArray(raw)) throw new MalformedRecordError(-1, "list() did not return an array");
  return raw.map((r, i) => {
    try {
      return validateRecord(r);
    } catch (e) {
      throw new MalformedRecordError(i, (e as Error).message);
    }
  });
}
