// Reading one containers/storage store without its locks. c/storage replaces
// images.json and layers.json atomically (temp file + rename), so an unlocked
// reader always sees a whole file; what it can see is a big-data file of an
// image that was removed after images.json was read. A scan therefore
// re-checks images.json and layers.json when it ends and starts again if they
// changed, and its problems are logged only once the store held still.
//
// On the registry mirror (content()), an image is its stored config, its
// layers re-created from <driver>-layers/<id>.tar-split.gz over the layer's
// files, and the manifest imagelet writes over them (common/recreated-image.ts).
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { BackendContext, ContentBody, ImageRecord, Platform, CallContext, FsUsage } from "../../backend/contract";
import { isDigest, rootfsDiffIds } from "../../model/digest";
import { quote } from "../../model/reference";
import {
  MANIFEST_KEY,
  STORAGE_ID,
  bigDataSize,
  layerChainSize,
  parseStorageImage,
  parseStorageLayer,
  signatureSizes,
  sortNamesByType,
  type StorageImage,
  type StorageLayer,
} from "../common/cstorage";
import { configFacts } from "../common/oci-config";
import { ProblemLog, StoreProblem, bigDataFileName, readStoreJson, watchDirectories, directoryUsage } from "../common/files";
import { writtenRepoDigests } from "../common/written-manifest";
import { recreatedContent, recreatedImage, type LayerLocation, type RecreatedImage, type RecreatedLayer } from "../common/recreated-image";
import { TarSplitSizes, hasFile } from "../common/tar-split";
import { isRecord } from "../../model/json";

/**
 * Probed in this order when no driver is configured; the first whose
 * <driver>-images/images.json exists is read. c/storage's own guess prefers
 * overlay and takes vfs only when nothing else is there (drivers.go).
 */
export const DRIVER_PRIORITY = ["overlay", "btrfs", "zfs", "aufs", "devicemapper", "vfs"] as const;

/**
 * images.json holds every image's record (~1.5 KB each), so a large store's
 * file is far bigger than any manifest; c/storage sets no limit of its own.
 */
export const MAX_STORE_JSON_BYTES = 512 * 1024 * 1024;

/** The config key of an image listed without config: status() has none to serve either. */
const NO_CONFIG = "";

/** A scan that keeps seeing the store change is committed after this many tries. */
const MAX_SCAN_ATTEMPTS = 3;

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";

/**
 * What an image's manifest and config contribute; cached by image ID and
 * manifest digest. Not the parsed config itself: status() reads it from its
 * big-data file when verbose ImageStatus asks (parsed configs were most of a
 * large store's memory, as they were for the OCI layout backend).
 */
interface ImageDetail {
  /** The config's big-data key, when it is not `sha256:<image ID>` (the usual one); NO_CONFIG when it could not be read. */
  configKey?: string;
  user?: string;
  labels?: Record<string, string>;
  created?: string;
  platform?: Platform;
  annotations?: Record<string, string>;
  /** What the mirror serves the image from: the config file and its diff_ids, or why it cannot. */
  mirror?: { configDigest: string; configSize: number; diffIds: string[] } | { reason: string };
}

interface Problem {
  message: string;
  path: string;
}

interface Scan {
  records: ImageRecord[];
  problems: Problem[];
  configKeys: Map<string, string>;
}

interface Snapshot {
  key: string;
  /** The driver whose images these are, for status() to find the big data. */
  driver: string;
  records: ImageRecord[];
  byId: Map<string, ImageRecord>;
  /** Record ID → the config's big-data key, only where it is not `sha256:<image ID>`. */
  configKeys: Map<string, string>;
  /** Problems of the scan, joined: the same problems again mean nothing new was learnt. */
  problems: string;
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (!isRecord(v)) return undefined;
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** The stat identity of a file, or "-" when it does not exist. */
function fileKey(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "-";
    throw new StoreProblem(`cannot stat: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
}

/**
 * c/image GuessMIMEType for what CRI-O's buildImageCacheItem checks: the
 * manifest's annotations are served only when it is an OCI image manifest.
 */
function isOciManifest(manifest: Record<string, unknown>): boolean {
  if (manifest.mediaType === OCI_MANIFEST) return true;
  const config = manifest.config;
  return manifest.mediaType === undefined && isRecord(config) && config.mediaType === OCI_CONFIG;
}

export class ContainersStore {
  private readonly problems: ProblemLog;
  private snapshot?: Snapshot;
  /** Parsed manifest+config per image, keyed by ID and manifest digest: fixed once written. */
  private details = new Map<string, ImageDetail>();
  private touched = new Map<string, ImageDetail>();
  /** The driver read last, to log a change of detected driver once. */
  private driverInUse?: string;
  /** Problems found by the scan in progress; logged only if the store held still. */
  private pending: Problem[] = [];
  /** Config keys that are not `sha256:<image ID>`, found by the scan in progress. */
  private configKeys = new Map<string, string>();
  /** Each images.json entry's record (null: not listed), by a hash of the entry's text and the layer files' key. */
  private outcomes = new Map<string, ImageRecord | null>();
  /** What the mirror serves for a listed record (records are memoized, so this follows them). */
  private readonly served = new WeakMap<ImageRecord, RecreatedImage>();
  private readonly tarSplitSizes = new TarSplitSizes();

  constructor(
    readonly root: string,
    private readonly configuredDriver: string | undefined,
    private readonly ctx: BackendContext,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
  }

  list(): ImageRecord[] {
    for (let attempt = 1; ; attempt++) {
      const driver = this.driver();
      const key = this.storeKey(driver);
      // images.json and layers.json are the store's commit points: both unchanged, nothing changed.
      if (this.snapshot?.key === key && this.snapshot.problems === "") return this.snapshot.records;
      const scan = this.scan(driver, this.layersKey(driver));
      let settled: boolean;
      try {
        settled = this.storeKey(driver) === key;
      } catch {
        settled = false;
      }
      if (settled || attempt >= MAX_SCAN_ATTEMPTS) return this.commit(key, driver, scan);
    }
  }

  /** A listed image with its raw config, read from its big-data file again (records carry none). */
  status(id: string): ImageRecord | undefined {
    const snapshot = this.snapshot;
    const record = snapshot?.byId.get(id);
    if (!snapshot || !record) return undefined;
    const configKey = snapshot.configKeys.get(id) ?? id;
    if (configKey === NO_CONFIG) return record;
    const hex = id.slice("sha256:".length);
    const path = join(this.imagesDir(snapshot.driver), hex, bigDataFileName(configKey));
    try {
      const config = readStoreJson(this.root, path).value;
      if (!isRecord(config)) throw new StoreProblem("config is not a JSON object", path);
      return { ...record, config };
    } catch (e) {
      if (!(e instanceof StoreProblem)) throw e;
      this.problems.report(`config of ${id} unavailable: ${e.message}`, e.path);
      return record;
    }
  }

  /** The registry mirror's content: the written manifest, the config, a re-created layer. */
  async content(id: string, digest: string, ctx: CallContext): Promise<ContentBody | undefined> {
    const snapshot = this.snapshot;
    const record = snapshot?.byId.get(id);
    const image = record && this.served.get(record);
    if (!snapshot || !image) return undefined;
    return recreatedContent(image, digest, {
      storeRoot: this.root,
      locate: (layer) => this.locateLayer(snapshot.driver, layer),
      sizes: this.tarSplitSizes,
      problems: this.problems,
      signal: ctx.signal,
    });
  }

  /**
   * A layer's tar-split and files: overlay/<id>/diff (the layer's own files;
   * its lowers are not needed, as the tar names only its own) or vfs/dir/<id>
   * (a full copy, of which the tar names the layer's part).
   */
  private locateLayer(driver: string, layer: RecreatedLayer): LayerLocation {
    const tarSplit = join(this.layersDir(driver), `${layer.key}.tar-split.gz`);
    // A layer ID (the diff ID, or a chain hash: c/image storage_dest.go layerID) names files here.
    if (!STORAGE_ID.test(layer.key)) return { reason: `layer ID ${quote(layer.key)} is not 64 hex`, path: this.layersDir(driver) };
    if (!hasFile(tarSplit)) return { reason: "it has no tar-split (a partial pull, or a layer from an additional store)", path: tarSplit };
    if (driver === "vfs") return { storeRoot: this.root, tarSplit, diffDir: join(this.root, "vfs", "dir", layer.key) };
    if (driver === "overlay") {
      const layerDir = join(this.root, "overlay", layer.key);
      // composefs keeps files flat by digest (diff/xx/…), named only in the TOC: not by their tar names.
      if (existsSync(join(layerDir, "composefs-data"))) return { reason: "its files are stored flat for composefs", path: layerDir };
      return { storeRoot: this.root, tarSplit, diffDir: join(layerDir, "diff") };
    }
    return { reason: `layers of the ${driver} driver are not read (overlay and vfs are)`, path: join(this.root, driver) };
  }

  /** ImageFsInfo: the whole store root is image data. */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    return [await directoryUsage(this.root, ctx.signal)];
  }

  watch(onChange: () => void): () => void {
    // images.json and layers.json are renamed into place: events on their
    // directories. The root is watched too, for a driver's directories
    // appearing; a root that is removed and recreated is left to the poll.
    const driver = this.configuredDriver ?? this.driverInUse;
    return watchDirectories([this.root, ...(driver ? [this.imagesDir(driver), this.layersDir(driver)] : [])], onChange, this.problems);
  }

  imagesDir(driver: string): string {
    return join(this.root, `${driver}-images`);
  }

  layersDir(driver: string): string {
    return join(this.root, `${driver}-layers`);
  }

  /** The configured driver, else the first of DRIVER_PRIORITY with an images.json. */
  private driver(): string {
    if (this.configuredDriver !== undefined) return this.configuredDriver;
    try {
      if (!statSync(this.root).isDirectory()) throw new StoreProblem("the store root is not a directory", this.root);
    } catch (e) {
      if (e instanceof StoreProblem) throw e;
      throw new StoreProblem(`no store root: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, this.root);
    }
    const found = DRIVER_PRIORITY.filter((d) => fileKey(join(this.imagesDir(d), "images.json")) !== "-");
    const chosen = found[0];
    if (chosen === undefined) {
      throw new StoreProblem(`no <driver>-images/images.json for any of ${DRIVER_PRIORITY.join(", ")}`, this.root);
    }
    if (found.length > 1) {
      const notice = `images of several drivers (${found.join(", ")}); reading ${chosen}, set driver to choose another`;
      this.ctx.setNotice(notice);
      this.problems.report(notice, this.root);
    } else {
      this.ctx.setNotice(undefined);
    }
    if (this.driverInUse !== chosen) {
      this.ctx.log.info("reading containers/storage", { backend: this.ctx.name, path: this.root, driver: chosen });
      this.driverInUse = chosen;
    }
    return chosen;
  }

  private storeKey(driver: string): string {
    const images = join(this.imagesDir(driver), "images.json");
    const imagesKey = fileKey(images);
    if (imagesKey === "-") throw new StoreProblem("no images.json", images);
    return `${imagesKey}|${this.layersKey(driver)}`;
  }

  /** What every image's size depends on: the layer files. */
  private layersKey(driver: string): string {
    const layers = this.layersDir(driver);
    return `${driver}|${fileKey(join(layers, "layers.json"))}|${fileKey(join(layers, "volatile-layers.json"))}`;
  }

  private commit(key: string, driver: string, scan: Scan): ImageRecord[] {
    for (const p of scan.problems) this.problems.report(p.message, p.path);
    this.details = this.touched;
    this.touched = new Map();
    const problems = scan.problems.map((p) => `${p.path}\0${p.message}`).join("\n");
    // A retried scan that learnt nothing new keeps the same array, so the registry skips the rebuild.
    if (this.snapshot?.key === key && this.snapshot.problems === problems) return this.snapshot.records;
    this.snapshot = { key, driver, records: scan.records, byId: new Map(scan.records.map((r) => [r.id, r])), configKeys: scan.configKeys, problems };
    return scan.records;
  }

  private problem(message: string, path: string): void {
    this.pending.push({ message, path });
  }

  private scan(driver: string, layersKey: string): Scan {
    this.pending = [];
    this.touched = new Map();
    // Kept in step with `outcomes`: a memoized record's key comes from the scan that made it.
    const previousKeys = this.configKeys;
    this.configKeys = new Map();
    const layers = this.readLayers(driver);
    const imagesPath = join(this.imagesDir(driver), "images.json");
    const entries = readStoreJson(this.root, imagesPath, MAX_STORE_JSON_BYTES).value;
    if (!Array.isArray(entries)) throw new StoreProblem("images.json is not a list", imagesPath);
    const records: ImageRecord[] = [];
    const seen = new Set<string>();
    const outcomes = new Map<string, ImageRecord | null>();
    entries.forEach((raw: unknown, index: number) => {
      // An entry with the same text on the same layers gives the same record:
      // after a change only new or changed entries are worked out again.
      const memoKey = createHash("sha256").update(layersKey).update("\0").update(JSON.stringify(raw) ?? "").digest("base64");
      let outcome = this.outcomes.get(memoKey);
      if (outcome) {
        const configKey = previousKeys.get(outcome.id);
        if (configKey !== undefined) this.configKeys.set(outcome.id, configKey);
      } else if (outcome === undefined) {
        const before = this.pending.length;
        outcome = this.entryRecord(driver, raw, index, imagesPath, layers);
        // Only clean outcomes are kept: an entry with a problem is looked at again next scan.
        if (this.pending.length !== before) {
          if (outcome) this.noteSeen(seen, outcome, records);
          return;
        }
      }
      outcomes.set(memoKey, outcome);
      if (outcome) this.noteSeen(seen, outcome, records);
    });
    this.outcomes = outcomes;
    return { records, problems: this.pending, configKeys: this.configKeys };
  }

  /** Adds a record unless its ID was listed already (c/storage forbids duplicates; a hand-edited file may not). */
  private noteSeen(seen: Set<string>, record: ImageRecord, records: ImageRecord[]): void {
    if (seen.has(record.id)) return;
    seen.add(record.id);
    records.push(record);
  }

  /** One images.json entry's record; null when it is not listed (a manifest list, a broken entry). */
  private entryRecord(driver: string, raw: unknown, index: number, imagesPath: string, layers: ReadonlyMap<string, StorageLayer>): ImageRecord | null {
    let image: StorageImage;
    try {
      image = parseStorageImage(raw);
    } catch (e) {
      this.problem(`entry ${index} skipped: ${(e as Error).message}`, imagesPath);
      return null;
    }
    // Manifest lists (buildah manifest create) are records without a layer: not runnable images.
    if (image.layer === undefined) return null;
    return this.toRecord(driver, image, image.layer, layers) ?? null;
  }

  /** layers.json plus volatile-layers.json (c/storage layers.go); a missing file holds no layers. */
  private readLayers(driver: string): Map<string, StorageLayer> {
    const layers = new Map<string, StorageLayer>();
    for (const file of ["layers.json", "volatile-layers.json"]) {
      const path = join(this.layersDir(driver), file);
      if (fileKey(path) === "-") continue;
      const entries = readStoreJson(this.root, path, MAX_STORE_JSON_BYTES).value;
      if (!Array.isArray(entries)) throw new StoreProblem(`${file} is not a list`, path);
      entries.forEach((raw: unknown, index: number) => {
        try {
          const layer = parseStorageLayer(raw);
          layers.set(layer.id, layer);
        } catch (e) {
          this.problem(`layer entry ${index} skipped: ${(e as Error).message}`, path);
        }
      });
    }
    return layers;
  }

  private toRecord(driver: string, image: StorageImage, topLayer: string, layers: ReadonlyMap<string, StorageLayer>): ImageRecord | undefined {
    const layersPath = join(this.layersDir(driver), "layers.json");
    const chain = layerChainSize(topLayer, layers);
    if (!chain.ok) {
      // A layer still being written belongs to an image still being pulled: not a problem, just not yet.
      if (chain.reason === "incomplete") {
        this.ctx.log.debug("image skipped: layer incomplete", { backend: this.ctx.name, image: image.id, layer: chain.layer });
      } else {
        this.problem(`image ${image.id} skipped: layer ${chain.layer} ${chain.reason === "missing" ? "is not in the layer store" : "is in a parent cycle"}`, layersPath);
      }
      return undefined;
    }
    // c/image Size() as CRI-O reports it (storage_src.go getSize): every
    // big-data item + legacy signature sizes + diff-size of each layer in the chain.
    const size = bigDataSize(image) + signatureSizes(image.metadata) + chain.size;
    const source = join(this.imagesDir(driver), image.id);
    if (size <= 0) {
      this.problem(`image ${image.id} skipped: its size is 0`, source);
      return undefined;
    }
    const { tags, digested, invalid } = sortNamesByType(image.names);
    for (const name of invalid) this.problem(`image ${image.id}: name ${quote(name)} is not a reference`, source);
    const detail = this.detailOf(driver, image);
    if (detail.configKey !== undefined) this.configKeys.set(`sha256:${image.id}`, detail.configKey);
    const served = this.mirrored(driver, image, detail, chain.layers);
    // Not CRI-O's makeRepoDigests: the store's manifest digests name compressed layers the
    // store no longer has; the repo digests name the manifest the mirror serves. An image with
    // no names keeps CRI-O's `names-history[0]` repository, so it is still listed with one.
    const named = tags.length + digested.length > 0 ? [...tags, ...digested].map((n) => n.repository) : image.namesHistory.slice(0, 1);
    const repoDigests = writtenRepoDigests(named, served?.manifest.descriptor);
    const record: ImageRecord = {
      id: `sha256:${image.id}`,
      repoTags: tags.map((t) => t.name).sort(),
      repoDigests,
      size,
      user: detail.user,
      created: detail.created ?? image.created,
      labels: detail.labels,
      annotations: detail.annotations,
      platform: detail.platform,
      kind: "oci",
      source,
      target: served?.manifest.descriptor,
    };
    if (served) this.served.set(record, served);
    return record;
  }

  /**
   * The image as the mirror serves it, when the store has what that takes:
   * the config, and for each of its diff_ids, in order, the layer of the
   * chain with that diff-digest and a known diff-size. Why not is logged once.
   */
  private mirrored(driver: string, image: StorageImage, detail: ImageDetail, chain: readonly StorageLayer[]): RecreatedImage | undefined {
    const source = join(this.imagesDir(driver), image.id);
    const mirror = detail.mirror;
    if (mirror === undefined) return undefined;
    const notServed = (why: string) => {
      this.problems.report(`image ${image.id} is not served on the mirror: ${why}`, source);
      return undefined;
    };
    if ("reason" in mirror) return notServed(mirror.reason);
    if (chain.length !== mirror.diffIds.length || chain.some((l, i) => l.diffDigest !== mirror.diffIds[i])) {
      return notServed("its layers' diff-digests are not the config's diff_ids");
    }
    const unsized = chain.find((l) => l.diffSize <= 0);
    if (unsized) return notServed(`layer ${unsized.id} has no uncompressed size (diff-size ${unsized.diffSize}; a partial pull?)`);
    return recreatedImage(
      { digest: mirror.configDigest, size: mirror.configSize, path: this.bigDataPath(driver, image, mirror.configDigest) },
      chain.map((l) => ({ diffId: l.diffDigest!, size: l.diffSize, key: l.id })),
    );
  }

  /**
   * The image's manifest (the `manifest` item, which c/image reads as the
   * image's own, else `manifest-<digest>`) and the config it names. Either
   * missing or unreadable: the image is still listed, since its ID, names and
   * size come from images.json and layers.json, but without user, labels or
   * config; the problem is logged with the file's path.
   */
  private detailOf(driver: string, image: StorageImage): ImageDetail {
    const manifestKey = image.bigDataNames.includes(MANIFEST_KEY)
      ? MANIFEST_KEY
      : image.bigDataNames.find((n) => image.digest !== undefined && n === `manifest-${image.digest}`);
    const source = join(this.imagesDir(driver), image.id);
    if (manifestKey === undefined) {
      this.problem(`image ${image.id} listed without config: no manifest among its big data`, source);
      return { configKey: NO_CONFIG };
    }
    const cacheKey = `${image.id}\0${manifestKey}\0${image.bigDataDigests[manifestKey] ?? image.bigDataSizes[manifestKey] ?? ""}`;
    const cached = this.touched.get(cacheKey) ?? this.details.get(cacheKey);
    if (cached) {
      this.touched.set(cacheKey, cached);
      return cached;
    }
    try {
      const { value: manifest, path: manifestPath } = this.bigData(driver, image, manifestKey);
      if (!isRecord(manifest)) throw new StoreProblem("manifest is not a JSON object", manifestPath);
      const configDigest = isRecord(manifest.config) && isDigest(manifest.config.digest) ? manifest.config.digest : `sha256:${image.id}`;
      const { value: config, bytes: configBytes, path: configPath } = this.bigData(driver, image, configDigest);
      if (!isRecord(config)) throw new StoreProblem("config is not a JSON object", configPath);
      const { config: _parsed, ...facts } = configFacts(config)!;
      const diffIds = rootfsDiffIds(config);
      const detail: ImageDetail = {
        ...facts,
        configKey: configDigest === `sha256:${image.id}` ? undefined : configDigest,
        annotations: isOciManifest(manifest) ? stringMap(manifest.annotations) : undefined,
        mirror: typeof diffIds === "string" ? { reason: diffIds } : { configDigest, configSize: configBytes.length, diffIds },
      };
      this.touched.set(cacheKey, detail);
      return detail;
    } catch (e) {
      if (!(e instanceof StoreProblem)) throw e;
      this.problem(`image ${image.id} listed without config: ${e.message}`, e.path);
      return { configKey: NO_CONFIG };
    }
  }

  private bigDataPath(driver: string, image: StorageImage, key: string): string {
    return join(this.imagesDir(driver), image.id, bigDataFileName(key));
  }

  private bigData(driver: string, image: StorageImage, key: string): { value: unknown; bytes: Buffer; path: string } {
    const path = this.bigDataPath(driver, image, key);
    if (!image.bigDataNames.includes(key)) throw new StoreProblem(`big-data item ${quote(key)} is not recorded in images.json`, path);
    return { ...readStoreJson(this.root, path), path };
  }
}
