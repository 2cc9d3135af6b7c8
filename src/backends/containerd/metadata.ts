// containerd's image records in its metadata database (meta.db, bbolt), as
// containerd's core/metadata writes them (buckets.go, images.go; metadata/ in
// containerd 1.x):
//
//   v1/                                  schema "v1"
//     version : varint                   minor revision of v1 (containerd 1.6: 3, 2.x: 4)
//     <namespace>/images/<image name>/
//       createdat, updatedat : Go time.MarshalBinary
//       target/ digest, mediatype : string; size : varint
//       labels/ <key> : <value>
//       annotations/ <key> : <value>     (the target's annotations; not read: the CRI shows none of them)
//
// Only reading lives here; what an image is made of (its content) is images.ts.
import { BoltBucket, BoltError, readSnapshot, readVarint, type BoltMeta } from "./bbolt";

/** The schema this reader knows (buckets.go schemaVersion). */
export const SCHEMA = "v1";
/**
 * The newest minor revision of v1 known here (core/metadata/db.go dbVersion).
 * containerd documents v1 revisions as backwards-compatible additions ("If
 * the layout changes, a new version must be made"), so a newer one is read
 * and reported once; another schema bucket than v1 is not read at all.
 */
export const KNOWN_DB_VERSION = 4;

/** One image record: a name and what it points at. Buffers are copied out of the pages. */
export interface ImageEntry {
  name: string;
  target?: { digest: string; mediaType: string; size: number };
  labels: Record<string, string>;
  /**
   * createdat as Go's time.MarshalBinary wrote it (readGoTime), copied out of
   * the page: parsed only for an image whose config has no `created` (a Date per
   * image was 7 % of a 10,000-image scan).
   */
  createdAt?: Buffer;
  /** Why the record could not be read whole (it is skipped, and this logged). */
  problem?: string;
}

export interface MetadataSnapshot {
  meta: BoltMeta;
  /** v1's `version` key; undefined when absent (containerd writes it at start). */
  dbVersion?: number;
  /** False when the namespace has no bucket (nothing was ever stored in it). */
  namespaceExists: boolean;
  /** Every namespace in the file, for telling the operator what there is. */
  namespaces: string[];
  images: ImageEntry[];
}

/** Why meta.db cannot be read as containerd's metadata: a BoltError, or a schema we do not know. */
export class SchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

function stringMap(bucket: BoltBucket | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  bucket?.forEach((k, v) => {
    if (!(v instanceof BoltBucket)) out[k.toString("utf8")] = v.toString("utf8");
  });
  return out;
}

function readImage(name: string, bucket: BoltBucket): ImageEntry {
  const entry: ImageEntry = { name, labels: {} };
  let target: BoltBucket | undefined;
  bucket.forEach((k, v) => {
    const key = k.toString("utf8");
    if (v instanceof BoltBucket) {
      if (key === "target") target = v;
      else if (key === "labels") entry.labels = stringMap(v);
    } else if (key === "createdat") entry.createdAt = Buffer.from(v);
    // updatedat is not read: nothing the CRI shows comes from it.
  });
  if (!target) {
    entry.problem = "its record has no target";
    return entry;
  }
  let digest: string | undefined;
  let mediaType: string | undefined;
  let size: number | undefined;
  target.forEach((k, v) => {
    if (v instanceof BoltBucket) return;
    const key = k.toString("utf8");
    if (key === "digest") digest = v.toString("utf8");
    else if (key === "mediatype") mediaType = v.toString("utf8");
    else if (key === "size") size = readVarint(v);
  });
  if (digest === undefined || mediaType === undefined || size === undefined || size < 0) {
    entry.problem = "its target lacks a digest, media type or size";
    return entry;
  }
  entry.target = { digest, mediaType, size };
  return entry;
}

/**
 * Reads the image records of `namespace` from meta.db as one consistent
 * snapshot (bbolt.ts readSnapshot). Throws BoltError for a file that is not
 * bbolt, is corrupt or kept changing, and SchemaError for a bbolt file that
 * is not containerd's v1 metadata.
 */
export function readImages(path: string, namespace: string): MetadataSnapshot {
  const { value, meta } = readSnapshot(path, (root) => {
    const top = root.entries();
    const v1 = top.get(SCHEMA);
    if (!(v1 instanceof BoltBucket)) {
      const names = [...top.keys()].slice(0, 5).map((k) => JSON.stringify(k));
      throw new SchemaError(
        names.length === 0
          ? `no ${SCHEMA} bucket: not containerd's metadata, or containerd never started on it`
          : `no ${SCHEMA} bucket (top-level buckets: ${names.join(", ")}): not containerd's metadata schema ${SCHEMA}`,
      );
    }
    let dbVersion: number | undefined;
    let ns: BoltBucket | undefined;
    const namespaces: string[] = [];
    v1.forEach((k, v) => {
      const key = k.toString("utf8");
      if (key === "version" && !(v instanceof BoltBucket)) dbVersion = readVarint(v);
      else if (v instanceof BoltBucket) {
        namespaces.push(key);
        if (key === namespace) ns = v;
      }
    });
    const images: ImageEntry[] = [];
    const imagesBucket = ns?.bucket("images");
    imagesBucket?.forEach((k, v) => {
      const name = k.toString("utf8");
      if (v instanceof BoltBucket) images.push(readImage(name, v));
      else images.push({ name, labels: {}, problem: "its record is a value, not a bucket" });
    });
    return { dbVersion, namespaces, namespaceExists: ns !== undefined, images };
  });
  return { ...value, meta };
}

export { BoltError };
