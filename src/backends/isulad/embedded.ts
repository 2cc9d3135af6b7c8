// iSulad's embedded images (docs/backends.md#isulad): images made of a
// hand-written manifest and squashfs (or bind-mounted directory) layers, with
// no OCI config and no registry manifest. They come from two places:
// - iSulad's sqlite.db, where `isula load -t embedded` recorded them
//   (db_all.c: image_info + image_names);
// - a directory of *.manifest files, each checked the way `isula load` checks
//   it (load.c: the sibling .sgn; lim.c: schema, layers, sizes).
// Either way an image is identified by the sha256 of its manifest file, which
// iSulad calls its config digest and lists as the image ID.
import { Database } from "bun:sqlite";
import { createHash } from "node:crypto";
import { sha256Hex } from "../../model/digest";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { ImageRecord } from "../../backend/contract";
import { formatReference, parseNormalizedNamed, quote } from "../../model/reference";
import { ProblemLog, StoreProblem, parseJson, readStoreFile } from "../common/files";
import { SHA256_HEX, listDir, resolveInside } from "./paths";
import { isRecord } from "../../model/json";

export const EMBEDDED_MANIFEST_TYPE = "application/embedded.manifest+json";
export const SQUASHFS_LAYER_TYPE = "application/squashfs.image.rootfs.diff.img";
export const DIR_LAYER_TYPE = "application/bind.image.rootfs.diff.dir";
/** lim.c LAYER_NUM_MAX. */
export const MAX_EMBEDDED_LAYERS = 125;
/** utils_verify MAX_IMAGE_NAME_LEN. */
const MAX_IMAGE_NAME_LENGTH = 255;
/** utils_verify __TagPattern, after the ':'. */
const EMBEDDED_TAG = /^[A-Za-z_0-9][A-Za-z_0-9.-]{0,127}$/;
/** util_valid_time_tz: RFC 3339 with a time zone. */
const RFC3339_TZ = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/** A .sgn holds "sha256:" + 64 hex; anything much longer is not one. */
const MAX_SGN_BYTES = 4096;

/** One embedded image as both sources describe it. */
export interface EmbeddedImage {
  /** sha256:<hex of the manifest file>. */
  id: string;
  names: string[];
  size: number;
  created?: string;
  source: string;
}

export interface EmbeddedLayer {
  mediaType: string;
  size: number;
  digest: string;
  pathInHost: string;
  pathInContainer: string;
}

export interface EmbeddedManifest {
  imageName: string;
  created: string;
  layers: EmbeddedLayer[];
}

/**
 * An embedded image name, normalized: util_valid_embedded_image_name wants
 * `name:tag` (the tag is not optional) and refuses the reserved `none`; the
 * name must also be a reference the registry can normalize.
 */
export function embeddedImageTag(name: string): string {
  if (name.length > MAX_IMAGE_NAME_LENGTH) throw new Error(`image name ${quote(name)} is longer than ${MAX_IMAGE_NAME_LENGTH}`);
  if (name === "none" || name === "none:latest") throw new Error(`image name ${quote(name)} is reserved`);
  const colon = name.lastIndexOf(":");
  if (colon < 0 || name.slice(colon).includes("/") || !EMBEDDED_TAG.test(name.slice(colon + 1))) {
    throw new Error(`image name ${quote(name)} is not name:tag`);
  }
  let ref;
  try {
    ref = parseNormalizedNamed(name);
  } catch (e) {
    throw new Error(`image name ${quote(name)} is not a valid name: ${(e as Error).message}`);
  }
  if (ref.digest !== undefined || ref.tag === undefined) throw new Error(`image name ${quote(name)} is not name:tag`);
  return formatReference({ repository: ref.repository, tag: ref.tag });
}

function parseLayer(raw: unknown, index: number, file: string): EmbeddedLayer {
  const bad = (why: string) => new StoreProblem(`layer ${index}: ${why}`, file);
  if (!isRecord(raw)) throw bad("is not an object");
  const { mediaType, size, digest, pathInHost, pathInContainer } = raw;
  if (mediaType !== SQUASHFS_LAYER_TYPE && mediaType !== DIR_LAYER_TYPE) {
    throw bad(`mediaType ${quote(String(mediaType))} is neither ${SQUASHFS_LAYER_TYPE} nor ${DIR_LAYER_TYPE}`);
  }
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw bad("size is not a non-negative integer");
  if (digest !== undefined && typeof digest !== "string") throw bad("digest is not a string");
  if (typeof pathInHost !== "string" || pathInHost === "") throw bad("pathInHost is empty");
  if (pathInContainer !== undefined && typeof pathInContainer !== "string") throw bad("pathInContainer is not a string");
  const layer: EmbeddedLayer = { mediaType, size, digest: digest ?? "", pathInHost, pathInContainer: pathInContainer ?? "" };
  if (index === 0) {
    // Layer 0 is the container's root: a host block device or the host's / itself.
    if (!pathInHost.startsWith("/")) throw bad("pathInHost of the first layer must be absolute");
    if (mediaType === DIR_LAYER_TYPE && pathInHost !== "/") throw bad("pathInHost of a first directory layer must be /");
    if (layer.pathInContainer !== "") throw bad("pathInContainer of the first layer must be empty");
    if (layer.digest !== "") throw bad("digest of the first layer must be empty");
  } else {
    if (pathInHost.startsWith("/")) throw bad("pathInHost must be relative to the manifest");
    if (!layer.pathInContainer.startsWith("/")) throw bad("pathInContainer must be absolute");
    if (layer.digest !== "" && mediaType === DIR_LAYER_TYPE) throw bad("a directory layer has no digest");
    if (layer.digest !== "" && !/^sha256:[a-f0-9]{64}$/.test(layer.digest)) throw bad(`digest ${quote(layer.digest)} is not sha256:<64 hex>`);
  }
  return layer;
}

/** The manifest checks of lim.c valid_embedded_manifest that need no files. */
export function parseEmbeddedManifest(value: unknown, file: string): EmbeddedManifest {
  const bad = (why: string) => new StoreProblem(why, file);
  if (!isRecord(value)) throw bad("manifest is not a JSON object");
  const { schemaVersion, mediaType, imageName, created, layers } = value;
  if (!Array.isArray(layers) || layers.length < 1 || layers.length > MAX_EMBEDDED_LAYERS) {
    throw bad(`layers must be 1 to ${MAX_EMBEDDED_LAYERS} entries`);
  }
  if (schemaVersion !== 1) throw bad(`schemaVersion ${quote(String(schemaVersion))} is not 1`);
  if (mediaType !== EMBEDDED_MANIFEST_TYPE) throw bad(`mediaType ${quote(String(mediaType))} is not ${EMBEDDED_MANIFEST_TYPE}`);
  if (typeof imageName !== "string") throw bad("imageName is missing");
  try {
    embeddedImageTag(imageName);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (typeof created !== "string" || !RFC3339_TZ.test(created) || Number.isNaN(Date.parse(created))) {
    throw bad(`created ${quote(String(created))} is not an RFC 3339 time with a time zone`);
  }
  return { imageName, created, layers: layers.map((l, i) => parseLayer(l, i, file)) };
}

/** load.c replace_suffix_to_sgn: `dir/name.manifest` → `dir/name.sgn`. */
export function signatureFileOf(manifestFile: string): string {
  const base = basename(manifestFile);
  const dot = base.lastIndexOf(".");
  return join(dirname(manifestFile), `${dot > 0 ? base.slice(0, dot) : base}.sgn`);
}

/**
 * Reads the embedded images of a manifests directory. Layer files are hashed
 * (when the manifest gives a digest) once per file version, since squashfs
 * images can be large.
 */
export class EmbeddedManifestDir {
  private layerDigests = new Map<string, string>();

  constructor(
    readonly dir: string,
    private readonly problems: ProblemLog,
  ) {}

  /** Every valid manifest's image; `complete` is false when some entry was skipped. */
  scan(): { value: EmbeddedImage[]; complete: boolean } {
    const images: EmbeddedImage[] = [];
    let complete = true;
    const used = new Map<string, string>();
    for (const name of listDir(this.dir)) {
      if (!name.endsWith(".manifest")) continue;
      try {
        images.push(this.read(join(this.dir, name), used));
      } catch (e) {
        complete = false;
        this.problems.skip(e, "embedded manifest");
      }
    }
    // Keep only the digests of layers still named, so churn cannot grow memory.
    this.layerDigests = used;
    return { value: images, complete };
  }

  /** One manifest, checked as `isula load -t embedded` checks it. */
  read(file: string, used = new Map<string, string>()): EmbeddedImage {
    const bytes = readStoreFile(this.dir, file);
    const hex = sha256Hex(bytes);
    this.checkSignature(file, hex);
    const manifest = parseEmbeddedManifest(parseJson(bytes, file), file);
    this.checkLayer0(manifest.layers[0]!, file);
    let size = 0;
    for (const layer of manifest.layers.slice(1)) size += this.layerFileSize(layer, file, used);
    return {
      id: `sha256:${hex}`,
      names: [manifest.imageName],
      // lim_add_manifest stores the file sizes of layers 1..n; an image whose only
      // layer is the host's root would be 0, which kubelet refuses: count the manifest.
      size: size > 0 ? size : bytes.length,
      created: manifest.created,
      source: file,
    };
  }

  /** load.c get_digest: the .sgn must exist and name the manifest's sha256. */
  private checkSignature(file: string, hex: string): void {
    const sgn = signatureFileOf(file);
    let text: string;
    try {
      text = readStoreFile(this.dir, sgn, MAX_SGN_BYTES).toString("utf8");
    } catch (e) {
      if (e instanceof StoreProblem) throw new StoreProblem(`no usable signature file ${basename(sgn)}: ${e.message}`, file);
      throw e;
    }
    // iSulad wants exactly the 71 characters; a trailing newline (as `echo` writes) is forgiven.
    if (text.trimEnd() !== `sha256:${hex}`) {
      throw new StoreProblem(`signature file ${basename(sgn)} does not hold the manifest's digest sha256:${hex}`, file);
    }
  }

  /** Layer 0 lives on the host, outside the store: only its kind is checked (lim.c). */
  private checkLayer0(layer: EmbeddedLayer, file: string): void {
    const kind = statKind(layer.pathInHost);
    if (layer.mediaType === DIR_LAYER_TYPE ? kind !== "dir" : kind !== "block") {
      const want = layer.mediaType === DIR_LAYER_TYPE ? "a directory" : "a block device";
      throw new StoreProblem(`layer 0: ${layer.pathInHost} is not ${want}`, file);
    }
  }

  /** A later layer: a file (or directory) beside the manifest, its digest checked when given. */
  private layerFileSize(layer: EmbeddedLayer, file: string, used: Map<string, string>): number {
    const path = join(dirname(file), layer.pathInHost);
    let resolved: ReturnType<typeof resolveInside>;
    try {
      resolved = resolveInside(this.dir, path);
    } catch (e) {
      // The manifest is the entry skipped; say which layer file broke it.
      if (e instanceof StoreProblem) throw new StoreProblem(`layer ${layer.pathInHost}: ${e.message}`, file);
      throw e;
    }
    const { real, stat } = resolved;
    const wantDir = layer.mediaType === DIR_LAYER_TYPE;
    if (wantDir ? !stat.isDirectory() : !stat.isFile()) {
      throw new StoreProblem(`layer ${layer.pathInHost} is not a ${wantDir ? "directory" : "regular file"}`, file);
    }
    if (layer.digest !== "") {
      const key = `${real}\0${stat.ino}:${stat.size}:${stat.mtimeMs}`;
      const hex = this.layerDigests.get(key) ?? hashFile(real, path);
      used.set(key, hex);
      if (`sha256:${hex}` !== layer.digest) {
        throw new StoreProblem(`layer ${layer.pathInHost} does not match its digest ${layer.digest}`, file);
      }
    }
    return stat.size;
  }
}

function statKind(path: string): "dir" | "block" | "other" | "missing" {
  try {
    const st = statSync(path);
    return st.isDirectory() ? "dir" : st.isBlockDevice() ? "block" : "other";
  } catch {
    return "missing";
  }
}

/** sha256 of a file in chunks: layer images are too big to read whole. */
function hashFile(real: string, shown: string): string {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(1 << 20);
  let fd: number | undefined;
  try {
    fd = openSync(real, "r");
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } catch (e) {
    throw new StoreProblem(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, shown);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return hash.digest("hex");
}

interface ImageInfoRow {
  rowid: number;
  image_type: unknown;
  size: unknown;
  config_digest: unknown;
  created: unknown;
  config: unknown;
}

interface ImageNameRow {
  image_name: unknown;
  image_rowid: unknown;
}

/**
 * Reads iSulad's embedded-image database, read-only. A database that cannot
 * be opened or queried (locked, corrupt, not iSulad's) is one StoreProblem;
 * a bad row is logged and skipped.
 */
export function readEmbeddedDb(graphRoot: string, file: string, problems: ProblemLog): EmbeddedImage[] {
  const { real, stat } = resolveInside(graphRoot, file);
  if (!stat.isFile()) throw new StoreProblem("not a regular file", file);
  let infos: ImageInfoRow[];
  let names: ImageNameRow[];
  let db: Database | undefined;
  try {
    db = new Database(real, { readonly: true });
    // iSulad may be writing: wait briefly for its lock rather than fail at once.
    db.exec("PRAGMA busy_timeout = 250");
    infos = db.query("SELECT rowid AS rowid, image_type, size, config_digest, created, config FROM image_info").all() as ImageInfoRow[];
    names = db.query("SELECT image_name, image_rowid FROM image_names").all() as ImageNameRow[];
  } catch (e) {
    throw new StoreProblem(`embedded image database unreadable: ${(e as Error).message}`, file);
  } finally {
    db?.close();
  }
  const namesOf = new Map<number, string[]>();
  for (const n of names) {
    if (typeof n.image_name !== "string" || typeof n.image_rowid !== "number") continue;
    namesOf.set(n.image_rowid, [...(namesOf.get(n.image_rowid) ?? []), n.image_name]);
  }
  const images: EmbeddedImage[] = [];
  for (const row of infos) {
    try {
      images.push(dbImage(row, namesOf.get(row.rowid) ?? [], file, problems));
    } catch (e) {
      problems.skip(e, "embedded image");
    }
  }
  return images;
}

function dbImage(row: ImageInfoRow, rawNames: string[], file: string, problems: ProblemLog): EmbeddedImage {
  const where = `${file} (image_info row ${row.rowid})`;
  if (row.image_type !== "embedded") throw new StoreProblem(`image_type ${quote(String(row.image_type))} is not embedded`, where);
  // embedded_image.c takes whatever follows "sha256:" as the ID.
  const digest = typeof row.config_digest === "string" ? row.config_digest.replace(/^sha256:/, "") : "";
  if (!SHA256_HEX.test(digest)) throw new StoreProblem(`config_digest ${quote(String(row.config_digest))} is not a sha256 digest`, where);
  const names: string[] = [];
  for (const name of rawNames) {
    try {
      embeddedImageTag(name);
      names.push(name);
    } catch (e) {
      problems.report(`embedded image name skipped: ${(e as Error).message}`, where);
    }
  }
  // Dangling rows (no name) are what iSulad deletes at start; it cannot list them either.
  if (names.length === 0) throw new StoreProblem("no image name in image_names", where);
  // `size` is a REAL column holding an integer count of bytes: round what comes back.
  let size = typeof row.size === "number" && Number.isFinite(row.size) ? Math.round(row.size) : 0;
  if (size <= 0 && typeof row.config === "string") size = Buffer.byteLength(row.config);
  if (size <= 0) throw new StoreProblem("size is 0 and there is no manifest to count", where);
  const created = typeof row.created === "string" && RFC3339_TZ.test(row.created) ? row.created : undefined;
  return { id: `sha256:${digest}`, names, size, created, source: file };
}

/** One record per embedded image (same manifest digest), with the union of its names. */
export function embeddedRecords(images: readonly EmbeddedImage[]): ImageRecord[] {
  const byId = new Map<string, ImageRecord>();
  for (const image of images) {
    const existing = byId.get(image.id);
    const tags = image.names.map(embeddedImageTag);
    if (existing) {
      for (const t of tags) if (!existing.repoTags.includes(t)) existing.repoTags.push(t);
      continue;
    }
    // No repo digests: there is no registry manifest, "the digest cannot be displayed".
    byId.set(image.id, { id: image.id, repoTags: tags, repoDigests: [], size: image.size, created: image.created, kind: "embedded", source: image.source });
  }
  return [...byId.values()];
}
