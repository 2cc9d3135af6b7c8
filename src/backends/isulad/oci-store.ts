// iSulad's OCI image store (docs/backends.md#isulad): derived from
// containers/storage, but one images.json object per image directory
// (image_store.c) and one layer.json per layer directory (layer_store.c):
//   <graph>/storage/<driver>-images/<id>/{images.json, manifest, =<base64(key)>…}
//   <graph>/storage/<driver>-layers/<id>/layer.json
import { join } from "node:path";
import type { ImageRecord } from "../../backend/contract";
import { isDigest, sha256Digest } from "../../model/digest";
import { formatReference, parseDockerRef, parseNormalizedNamed, quote } from "../../model/reference";
import { MANIFEST_KEY, parseStorageImage, type StorageImage } from "../common/cstorage";
import { ProblemLog, StoreProblem, bigDataFileName, readStoreJson } from "../common/files";
import { configFacts, type ConfigFacts } from "../common/oci-config";
import { SHA256_HEX, isDirectory, listDir, statKey } from "./paths";
import { isRecord } from "../../model/json";

/** A layer chain longer than iSulad's MAX_LAYER_NUM (125) with margin is a loop or damage. */
const MAX_LAYER_DEPTH = 256;
/** Preferred when several drivers left stores behind: iSulad's default driver (overlay2) stores under "overlay". */
const PREFERRED_DRIVERS = ["overlay", "overlay2", "devicemapper", "vfs"];

/**
 * The drivers whose image stores exist under <graph>/storage, best first.
 * iSulad runs one driver at a time; a leftover store of another is ignored.
 */
export function detectDrivers(storageDir: string): string[] {
  if (!isDirectory(storageDir)) return [];
  const drivers = listDir(storageDir)
    .map((name) => /^(.+)-images$/.exec(name)?.[1])
    .filter((d): d is string => d !== undefined && isDirectory(join(storageDir, `${d}-images`)));
  const rank = (d: string) => {
    const i = PREFERRED_DRIVERS.indexOf(d);
    return i < 0 ? PREFERRED_DRIVERS.length : i;
  };
  return drivers.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function parseConfig(value: unknown, path: string): ConfigFacts {
  const facts = configFacts(value);
  if (!facts) throw new StoreProblem("image config is not a JSON object", path);
  return facts;
}

/** Reads the images of one driver's store. */
export class IsuladImageStore {
  constructor(
    /** The graph root: every file read must resolve inside it. */
    readonly root: string,
    readonly driver: string,
    private readonly problems: ProblemLog,
  ) {}

  get imagesDir(): string {
    return join(this.root, "storage", `${this.driver}-images`);
  }

  get layersDir(): string {
    return join(this.root, "storage", `${this.driver}-layers`);
  }

  /** The image directories iSulad would load: named by a 64-hex ID (get_images_from_json). */
  imageIds(): string[] {
    return listDir(this.imagesDir).filter((name) => SHA256_HEX.test(name));
  }

  /**
   * Stat identity of the store: the images and layers directories, every
   * image directory (big data added or removed) and every images.json
   * (rewritten by rename when names change).
   */
  key(): string {
    const ids = this.imageIds();
    const perImage = ids.map((id) => `${id}=${statKey(join(this.imagesDir, id))}/${statKey(join(this.imagesDir, id, "images.json"))}`);
    return [statKey(this.imagesDir), statKey(this.layersDir), ...perImage].join(",");
  }

  scan(): { value: ImageRecord[]; complete: boolean } {
    const records: ImageRecord[] = [];
    let complete = true;
    for (const id of this.imageIds()) {
      try {
        const record = this.readImage(id);
        if (record) records.push(record);
      } catch (e) {
        complete = false;
        this.problems.skip(e, `image ${id}`);
      }
    }
    return { value: records, complete };
  }

  private readImage(dirId: string): ImageRecord | undefined {
    const dir = join(this.imagesDir, dirId);
    const imagePath = join(dir, "images.json");
    // The same record as a containers/storage images.json entry (image_store.c is derived from it).
    let image: StorageImage;
    try {
      image = parseStorageImage(readStoreJson(this.root, imagePath).value);
    } catch (e) {
      if (e instanceof StoreProblem) throw e;
      throw new StoreProblem(`images.json: ${(e as Error).message}`, imagePath);
    }
    const id = image.id;
    // iSulad refuses an image whose manifest big data does not parse (image_store_validate_manifest_schema_version_1).
    const manifestPath = join(dir, bigDataFileName(MANIFEST_KEY));
    const { value: manifest, bytes: manifestBytes } = readStoreJson(this.root, manifestPath);
    if (!isRecord(manifest)) throw new StoreProblem("manifest is not a JSON object", manifestPath);
    const configKey = this.configKey(manifest, id);
    const configPath = join(dir, bigDataFileName(configKey));
    const config = parseConfig(readStoreJson(this.root, configPath).value, configPath);
    const layerSizes = this.layerChainSize(image.layer, imagePath);
    const { repoTags, repoDigests } = this.names(image, manifestBytes, imagePath);
    return {
      id: `sha256:${id}`,
      repoTags,
      repoDigests,
      size: this.size(image, layerSizes, imagePath),
      user: config.user,
      created: image.created ?? config.created,
      labels: config.labels,
      annotations: isRecord(manifest.annotations) ? stringMap(manifest.annotations) : undefined,
      platform: config.platform,
      config: config.config,
      kind: "oci",
      source: imagePath,
    };
  }

  /** The config's big-data key: the manifest's config digest, else iSulad's own `sha256:<id>` (get_image_info). */
  private configKey(manifest: Record<string, unknown>, id: string): string {
    const digest = isRecord(manifest.config) ? manifest.config.digest : undefined;
    return typeof digest === "string" && isDigest(digest) ? digest : `sha256:${id}`;
  }

  /**
   * Bytes of the layer chain from the image's top layer down (`diff-size`,
   * the uncompressed size, as iSulad's storage.c counts it). Every layer.json
   * must be there: a missing layer means a broken image.
   */
  private layerChainSize(top: string | undefined, imagePath: string): number {
    if (top === undefined) return 0;
    let total = 0;
    const seen = new Set<string>();
    let next: unknown = top;
    while (typeof next === "string" && next !== "") {
      if (!SHA256_HEX.test(next)) throw new StoreProblem(`layer ID ${quote(next)} is not 64 hex`, imagePath);
      if (seen.has(next) || seen.size >= MAX_LAYER_DEPTH) throw new StoreProblem(`layer chain loops at ${next}`, imagePath);
      seen.add(next);
      const layerPath = join(this.layersDir, next, "layer.json");
      const layer = readStoreJson(this.root, layerPath).value;
      if (!isRecord(layer)) throw new StoreProblem("layer.json is not a JSON object", layerPath);
      const diffSize = layer["diff-size"];
      if (typeof diffSize === "number" && Number.isFinite(diffSize) && diffSize > 0) total += diffSize;
      next = layer.parent;
    }
    return total;
  }

  /**
   * images.json `size` is what iSulad itself computed and lists (storage.c:
   * big data + layer sizes, minus one); when it is missing, the same sum
   * without the off-by-one.
   */
  private size(image: StorageImage, layerSizes: number, imagePath: string): number {
    if (image.size !== undefined) return image.size;
    const size = Math.round(Object.values(image.bigDataSizes).reduce((a, b) => a + b, 0) + layerSizes);
    if (size <= 0) throw new StoreProblem("size is unknown (no size, big data or layer sizes)", imagePath);
    return size;
  }

  /**
   * Tags and repo digests as iSulad lists them (image_store.c resort_image_names,
   * get_image_repo_digests): digested names are repo digests; every tag's
   * repository gets `repo@<image digest>`, the digest being images.json `digest`,
   * else the manifest's.
   */
  private names(image: StorageImage, manifestBytes: Buffer, imagePath: string): { repoTags: string[]; repoDigests: string[] } {
    const repoTags: string[] = [];
    const repoDigests: string[] = [];
    for (const name of image.names) {
      try {
        const ref = parseDockerRef(name);
        (ref.digest !== undefined ? repoDigests : repoTags).push(formatReference(ref));
      } catch (e) {
        this.problems.report(`name skipped: ${(e as Error).message}`, imagePath);
      }
    }
    const digest = this.imageDigest(image, manifestBytes);
    for (const tag of repoTags) {
      const repoDigest = formatReference({ repository: parseNormalizedNamed(tag).repository, digest });
      if (!repoDigests.includes(repoDigest)) repoDigests.push(repoDigest);
    }
    return { repoTags, repoDigests };
  }

  private imageDigest(image: StorageImage, manifestBytes: Buffer): string {
    if (image.digest !== undefined) return image.digest;
    const fromBigData = image.bigDataDigests[MANIFEST_KEY];
    if (isDigest(fromBigData)) return fromBigData;
    return sha256Digest(manifestBytes);
  }
}

function stringMap(v: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
}
