// Backend for Docker engine's classic image store (graphdriver mode):
// <root>/image/<driver>/{repositories.json, imagedb, layerdb}. It answers what
// `docker images` (without -a) shows, sized as Docker sizes images. See
// docs/backends.md#docker. With Docker's
// containerd image store (Docker 29's default) it reads <root>/containerd/daemon,
// namespace moby, through the containerd backend instead.
//
// On the registry mirror (content()), a classic-store image is its config
// from imagedb, its layers re-created from layerdb/<chain ID>/tar-split.json.gz
// over the driver's directory for the layer's cache-id, and the manifest
// imagelet writes over them (common/recreated-image.ts). Layer lengths come
// from the tar-splits, never from layerdb's `size` (the unpacked files' disk
// usage), so listing reads each new layer's tar-split once.
import { lstatSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  OptionError,
  defineBackend,
  type BackendContext,
  type ContentBody,
  type ImageRecord,
  type CallContext,
  type FsUsage,
} from "../../backend/contract";
import { isImageId } from "../../model/digest";
import { quote } from "../../model/reference";
import { ProblemLog, StoreProblem, parseJson, readStoreFile, readStoreJson, watchDirectories, directoryUsage } from "../common/files";
import { ContainerdStore } from "../containerd/index";
import { writtenRepoDigests } from "../common/written-manifest";
import { recreatedContent, recreatedImage, type LayerLocation, type RecreatedImage, type RecreatedLayer } from "../common/recreated-image";
import { TarSplitSizes, hasFile } from "../common/tar-split";
import { chainIds, sha256Hex } from "../../model/digest";
import { parseImageConfig, parseLayerSize, parseRepositories, type ImageConfig, type ImageNames } from "./metadata";
import { DEFAULT_DAEMON_CONFIG, DEFAULT_ROOT, locateStore, type StoreLocation } from "./mode";

const HEX_ID = /^[a-f0-9]{64}$/;
/** Storage driver names are plain directory names (overlay2, vfs, btrfs, zfs, fuse-overlayfs…). */
const DRIVER_NAME = /^[a-z0-9][a-z0-9._-]*$/;
/** layerdb size and imagedb parent files hold one short line. */
const SMALL_FILE_BYTES = 1024;
const NO_IMAGES: readonly ImageRecord[] = Object.freeze([]);
/** Docker's containerd image store: a containerd root under the Docker root, namespace moby (moby daemon/config DefaultContainersNamespace). */
const CONTAINERD_ROOT = join("containerd", "daemon");
const CONTAINERD_NAMESPACE = "moby";
/** Docker names an untagged image `moby-dangling@<digest>` (daemon/containerd/soft_delete.go): not a repo digest. */
const DANGLING_PREFIX = "moby-dangling@";

export interface DockerStoreOptions {
  root: string;
  driver?: string;
  daemonConfig?: string;
}

export default defineBackend({
  name: "docker",
  apiVersion: BACKEND_API_VERSION,
  description: "Docker engine store (classic storage-driver mode)",
  options: {
    path: { type: "string", required: true, description: `The Docker root (Docker's default: ${DEFAULT_ROOT})` },
    driver: { type: "string", description: "Storage driver directory under image/ (default: detected)" },
    daemon_config: {
      type: "string",
      description: `daemon.json checked for the containerd image store (default: ${DEFAULT_DAEMON_CONFIG} when path is ${DEFAULT_ROOT})`,
    },
  },
  create(options, ctx) {
    if (options.driver !== undefined && !DRIVER_NAME.test(options.driver)) {
      throw new OptionError("driver", `driver ${quote(options.driver)} is not a storage driver name`);
    }
    const root = resolve(ctx.baseDir, options.path);
    // The system's daemon.json describes the system's Docker only: a copied or test root must not inherit it.
    const daemonConfig =
      options.daemon_config !== undefined ? resolve(ctx.baseDir, options.daemon_config) : root === DEFAULT_ROOT ? DEFAULT_DAEMON_CONFIG : undefined;
    return new DockerStore({ root, driver: options.driver, daemonConfig }, ctx);
  },
});

interface CachedConfig {
  parsed: ImageConfig;
  bytes: number;
}

/** One image config that loaded, with what the scan learnt about it. */
interface LoadedImage {
  id: string;
  path: string;
  config: CachedConfig;
  parent?: string;
}

/** A layer's layerdb facts that never change for its chain ID, kept from one scan to the next. */
interface LayerFacts {
  size: number;
  /** layerdb's `diff` was read and is the diff_id its chain ID was computed from. */
  diffAgrees?: boolean;
}

export class DockerStore {
  private readonly problems: ProblemLog;
  /** Configs by image ID: content-addressed and verified, so never stale. */
  private configs = new Map<string, CachedConfig>();
  /** What layerdb/<chain ID>/ says of a layer, by chain ID: a chain ID names one layer content for good. */
  private layers = new Map<string, LayerFacts>();
  private cached?: { key: string; records: readonly ImageRecord[] };
  /** The last scan's answer, complete or not, for status(). */
  private records: readonly ImageRecord[] = NO_IMAGES;
  private location?: StoreLocation;
  /** The containerd image store, read by the containerd backend, when Docker uses it. */
  private containerd?: ContainerdStore;
  /** What the mirror serves for a listed record, by record. */
  private served = new WeakMap<ImageRecord, RecreatedImage>();
  private readonly tarSplitSizes = new TarSplitSizes();

  constructor(
    private readonly opts: DockerStoreOptions,
    private readonly ctx: BackendContext,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
  }

  get root(): string {
    return this.opts.root;
  }

  async list(): Promise<readonly ImageRecord[]> {
    const location = this.locate();
    if (location.mode === "containerd") {
      this.cached = undefined;
      const store = this.containerdStore();
      this.records = store.hasMetadata() ? await store.list() : NO_IMAGES;
      return this.records;
    }
    const key = this.changeKey(location.dir);
    // repositories.json and the content directory change on every tag, pull, build and removal.
    if (this.cached?.key === key) return this.cached.records;
    const { records, complete } = await this.scan(location);
    this.records = records;
    // A scan that missed a layer file is retried next time, since nothing else would notice the repair.
    this.cached = complete ? { key, records } : undefined;
    return records;
  }

  status(id: string): ImageRecord | undefined {
    if (this.location?.mode === "containerd" && this.containerd) return this.containerd.status(id);
    return this.records.find((r) => r.id === id);
  }

  /** The registry mirror's content: the written manifest, the config, a re-created layer. */
  async content(id: string, digest: string, ctx: CallContext): Promise<ContentBody | undefined> {
    const location = this.location;
    if (location?.mode === "containerd") {
      // The containerd store keeps the registry's manifests and blobs: served by the containerd backend's hook.
      return this.containerd?.content(id, digest);
    }
    const record = this.records.find((r) => r.id === id);
    const image = record && this.served.get(record);
    if (location === undefined || !image) return undefined;
    return recreatedContent(image, digest, {
      storeRoot: this.root,
      locate: (layer) => this.locateLayer(location, layer),
      sizes: this.tarSplitSizes,
      problems: this.problems,
      signal: ctx.signal,
    });
  }

  /** layerdb/<chain ID>/cache-id names the layer's directory: overlay2/<id>/diff, or vfs/dir/<id>. */
  private locateLayer(location: Extract<StoreLocation, { mode: "classic" }>, layer: RecreatedLayer): LayerLocation {
    const layerDb = join(location.dir, "layerdb", "sha256", layer.key.slice("sha256:".length));
    const tarSplit = join(layerDb, "tar-split.json.gz");
    const cacheIdPath = join(layerDb, "cache-id");
    const cacheId = readStoreFile(this.root, cacheIdPath, SMALL_FILE_BYTES).toString("utf8").trim();
    if (!HEX_ID.test(cacheId)) return { reason: `cache-id ${quote(cacheId)} is not 64 hex`, path: cacheIdPath };
    if (location.driver === "overlay2") return { storeRoot: this.root, tarSplit, diffDir: join(this.root, "overlay2", cacheId, "diff") };
    if (location.driver === "vfs") return { storeRoot: this.root, tarSplit, diffDir: join(this.root, "vfs", "dir", cacheId) };
    return { reason: `layers of the ${location.driver} driver are not read (overlay2 and vfs are)`, path: join(this.root, location.driver) };
  }

  /**
   * The image as the mirror serves it: each layer's layerdb `diff` must be
   * the config's diff_id, and its tar-split gives its length. Why an image
   * is not served is logged once; it is listed all the same.
   */
  private async mirrored(
    dir: string,
    image: LoadedImage,
    chains: readonly string[],
    facts: ReadonlyMap<string, LayerFacts>,
  ): Promise<RecreatedImage | undefined> {
    const layers: RecreatedLayer[] = [];
    try {
      const diffIds = image.config.parsed.diffIds;
      for (const [i, chainId] of chains.entries()) {
        const diffId = diffIds[i]!;
        const layerDb = join(dir, "layerdb", "sha256", chainId.slice("sha256:".length));
        const layer = facts.get(chainId)!;
        // Read once per chain ID while it stays in the store; a mismatch is read again next scan (it may be mended).
        if (!layer.diffAgrees) {
          const diffPath = join(layerDb, "diff");
          const recorded = readStoreFile(this.root, diffPath, SMALL_FILE_BYTES).toString("utf8").trim();
          if (recorded !== diffId) throw new StoreProblem(`layer ${chainId} records diff ${quote(recorded)}, the config's diff_id is ${diffId}`, diffPath);
          layer.diffAgrees = true;
        }
        const tarSplit = join(layerDb, "tar-split.json.gz");
        if (!hasFile(tarSplit)) throw new StoreProblem(`layer ${chainId} has no tar-split`, tarSplit);
        const { size } = await this.tarSplitSizes.get(this.root, tarSplit);
        layers.push({ diffId, size, key: chainId });
      }
    } catch (e) {
      if (!(e instanceof StoreProblem)) throw e;
      this.problems.report(`image ${image.id} is not served on the mirror: ${e.message}`, e.path);
      return undefined;
    }
    return recreatedImage({ digest: image.id, size: image.config.bytes, path: image.path }, layers);
  }

  /** ImageFsInfo: the whole store root is image data. */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    return [await directoryUsage(this.root, ctx.signal)];
  }

  watch(onChange: () => void): () => void {
    const dirs = [join(this.root, "image")];
    const location = this.location ?? this.tryLocate();
    if (location?.mode === "classic") {
      // repositories.json is replaced by rename (an event on its directory); configs and parents are added and removed.
      dirs.push(location.dir, join(location.dir, "imagedb", "content", "sha256"), join(location.dir, "imagedb", "metadata", "sha256"));
    }
    const stopDirs = watchDirectories(dirs, onChange, this.problems);
    // The containerd store is watched whatever the mode now: Docker may be switched to it.
    const stopContainerd = this.containerdStore().watch(onChange);
    return () => {
      stopDirs();
      stopContainerd();
    };
  }

  private containerdStore(): ContainerdStore {
    this.containerd ??= new ContainerdStore(
      { root: join(this.root, CONTAINERD_ROOT), namespace: CONTAINERD_NAMESPACE, ignoreName: (n) => n.startsWith(DANGLING_PREFIX) },
      this.ctx,
    );
    return this.containerd;
  }

  private tryLocate(): StoreLocation | undefined {
    try {
      return locateStore(this.opts, this.problems);
    } catch {
      return undefined;
    }
  }

  /** Finds the store and keeps the notice in step with the mode. */
  private locate(): StoreLocation {
    const location = locateStore(this.opts, this.problems);
    const previous = this.location;
    this.location = location;
    if (location.mode === "containerd") {
      if (previous?.mode !== "containerd") this.ctx.log.info("Docker uses the containerd image store", { backend: this.ctx.name, path: this.root, reason: location.reason });
      const store = this.containerdStore();
      const where = `${store.root}, namespace ${CONTAINERD_NAMESPACE}`;
      this.ctx.setNotice(
        store.hasMetadata()
          ? `Docker at ${this.root} uses the containerd image store; read through the containerd backend (${where})`
          : `Docker at ${this.root} uses the containerd image store; no images there yet (no ${store.metaPath})`,
      );
      return location;
    }
    this.ctx.setNotice(undefined);
    if (location.others.length > 0) {
      this.problems.report(
        `several storage drivers have a repositories.json; reading ${location.driver} (the newest), not ${location.others.join(", ")}`,
        join(this.root, "image"),
      );
    }
    return location;
  }

  private changeKey(dir: string): string {
    const repositories = join(dir, "repositories.json");
    const stamp = (path: string, required: boolean): string => {
      try {
        const st = statSync(path);
        return `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch (e) {
        if (required) throw new StoreProblem(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
        return "-";
      }
    };
    return [
      dir,
      stamp(repositories, true),
      stamp(join(dir, "imagedb", "content", "sha256"), true),
      stamp(join(dir, "imagedb", "metadata", "sha256"), false),
    ].join("|");
  }

  private async scan(location: Extract<StoreLocation, { mode: "classic" }>): Promise<{ records: ImageRecord[]; complete: boolean }> {
    const dir = location.dir;
    const repositoriesPath = join(dir, "repositories.json");
    const { byId: names, rejected } = parseRepositories(readStoreJson(this.root, repositoriesPath).value, repositoriesPath);
    for (const reason of rejected) this.problems.report(`repositories.json entry skipped: ${reason}`, repositoriesPath);
    const { images, present } = this.loadImages(dir);
    for (const id of names.keys()) {
      // A name for an image skipped above was already logged with that image's path.
      if (!present.has(id)) this.problems.report(`repositories.json names ${id}, which is not in imagedb`, repositoriesPath);
    }
    // Docker's `docker images` hides untagged images that are another image's parent (build intermediates).
    const parents = new Set<string>();
    for (const image of images.values()) if (image.parent !== undefined && images.has(image.parent)) parents.add(image.parent);

    const touchedLayers = new Map<string, LayerFacts>();
    let complete = true;
    const records: ImageRecord[] = [];
    for (const image of images.values()) {
      const imageNames = names.get(image.id) ?? { repoTags: [], repoDigests: [] };
      if (imageNames.repoTags.length === 0 && imageNames.repoDigests.length === 0 && parents.has(image.id)) continue;
      const chains = chainIds(image.config.parsed.diffIds);
      let layerBytes: number;
      try {
        layerBytes = this.layerBytes(dir, chains, touchedLayers);
      } catch (e) {
        complete = false;
        this.problems.skip(e, `image ${image.id}`);
        continue;
      }
      const served = await this.mirrored(dir, image, chains, touchedLayers);
      const record = this.toRecord(image, imageNames, layerBytes, served);
      if (served) this.served.set(record, served);
      records.push(record);
    }
    this.layers = touchedLayers;
    return { records, complete };
  }

  /** Every config in imagedb/content/sha256 that verifies and parses, by ID, with its parent; `present` also has the ones that did not. */
  private loadImages(dir: string): { images: Map<string, LoadedImage>; present: Set<string> } {
    const contentDir = join(dir, "imagedb", "content", "sha256");
    let names: string[];
    try {
      names = readdirSync(contentDir).sort();
    } catch (e) {
      throw new StoreProblem(`cannot list: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, contentDir);
    }
    const touched = new Map<string, CachedConfig>();
    const images = new Map<string, LoadedImage>();
    const present = new Set<string>();
    for (const hex of names) {
      // Docker's atomic writes leave ".tmp-*" files here for a moment; only digests are images.
      if (!HEX_ID.test(hex)) continue;
      const id = `sha256:${hex}`;
      present.add(id);
      const path = join(contentDir, hex);
      let config: CachedConfig;
      try {
        config = this.configs.get(id) ?? this.readConfig(path, hex);
      } catch (e) {
        this.problems.skip(e, `image ${id}`);
        continue;
      }
      touched.set(id, config);
      images.set(id, { id, path, config, parent: this.readParent(dir, hex) });
    }
    // Keep only configs still in the store, so churn cannot grow memory.
    this.configs = touched;
    return { images, present };
  }

  /** Reads a config and checks it is what its name says: Docker verifies the same on load. */
  private readConfig(path: string, hex: string): CachedConfig {
    const bytes = readStoreFile(this.root, path);
    const actual = sha256Hex(bytes);
    if (actual !== hex) throw new StoreProblem(`content does not match its name (sha256 is ${actual})`, path);
    return { parsed: parseImageConfig(parseJson(bytes, path), path), bytes: bytes.length };
  }

  /** imagedb/metadata/sha256/<id>/parent: set by builds and commits; absent for loaded and pulled images. */
  private readParent(dir: string, hex: string): string | undefined {
    const path = join(dir, "imagedb", "metadata", "sha256", hex, "parent");
    try {
      lstatSync(path);
    } catch {
      return undefined;
    }
    try {
      const parent = readStoreFile(this.root, path, SMALL_FILE_BYTES).toString("utf8").trim();
      if (isImageId(parent)) return parent;
      this.problems.report(`parent ${quote(parent)} is not an image ID; ignored`, path);
    } catch (e) {
      this.problems.skip(e, "parent");
    }
    return undefined;
  }

  /**
   * Docker's image size: the sum of layerdb sizes along the layer chain
   * (moby daemon/images/image_list.go). A missing layer throws: Docker itself
   * does not load an image whose layers are gone.
   */
  private layerBytes(dir: string, chains: readonly string[], touched: Map<string, LayerFacts>): number {
    let total = 0;
    for (const chainId of chains) {
      let facts = touched.get(chainId) ?? this.layers.get(chainId);
      if (facts === undefined) {
        const path = join(dir, "layerdb", "sha256", chainId.slice("sha256:".length), "size");
        facts = { size: parseLayerSize(readStoreFile(this.root, path, SMALL_FILE_BYTES).toString("utf8"), path) };
      }
      touched.set(chainId, facts);
      total += facts.size;
    }
    return total;
  }

  private toRecord(image: LoadedImage, names: ImageNames, layerBytes: number, served: RecreatedImage | undefined): ImageRecord {
    const { parsed, bytes } = image.config;
    const target = served?.manifest.descriptor;
    return {
      id: image.id,
      repoTags: names.repoTags,
      // Not repositories.json's `name@digest` keys (the registry's manifest or list, whose
      // compressed layers Docker did not keep): the manifest the mirror serves, per repository.
      repoDigests: writtenRepoDigests([...names.repoTags, ...names.repoDigests], target),
      // Docker reports 0 for an image whose layers are all empty; kubelet refuses size 0, so the config's own bytes stand in.
      size: layerBytes > 0 ? layerBytes : bytes,
      user: parsed.user,
      created: parsed.created,
      labels: parsed.labels,
      platform: parsed.platform,
      config: parsed.config,
      kind: "oci",
      source: image.path,
      target,
    };
  }
}
