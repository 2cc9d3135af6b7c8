// Backend for iSulad's graph root (default /var/lib/isulad): its OCI image
// store and its embedded images. See docs/backends.md#isulad.
//
// No content hook: the registry mirror answers 404 for iSulad's images (see
// NOT_MIRRORED).
import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import { BACKEND_API_VERSION, OptionError, defineBackend, type BackendContext, type ImageRecord, type CallContext, type FsUsage } from "../../backend/contract";
import { quote } from "../../model/reference";
import { ProblemLog, StoreProblem, watchDirectories, directoryUsage } from "../common/files";
import { EmbeddedManifestDir, embeddedRecords, readEmbeddedDb, type EmbeddedImage } from "./embedded";
import { IsuladImageStore, detectDrivers } from "./oci-store";
import { listDir, statKey } from "./paths";

/** db_common.h DBNAME, in the graph root (db_common_init). */
const DB_FILE = "sqlite.db";
const DRIVER_NAME = /^[a-z0-9][a-z0-9_.-]*$/;

/**
 * Why the registry mirror does not serve this store's images: iSulad writes
 * its <id>.tar-split.gz after unpacking, one entry per member with only its
 * name, size and CRC (util_archive.c), and no segments, so the header blocks,
 * padding and end marker of the original tar are gone and no layer can be
 * re-created with its diff_id (reference-layer-reconstruction.md §4).
 * Re-tarring would give new diff_ids, so a new config and image ID: not the
 * image kubelet was told about. Embedded images have no layers to serve.
 */
export const NOT_MIRRORED =
  "not served on the registry mirror: iSulad's tar-split keeps no tar headers, so its layers cannot be re-created byte for byte (embedded images are never served)";

export interface IsuladOptions {
  root: string;
  driver?: string;
  manifestsDir?: string;
}

export default defineBackend({
  name: "isulad",
  apiVersion: BACKEND_API_VERSION,
  description: "iSulad store: OCI images and embedded images",
  options: {
    path: { type: "string", required: true, description: "iSulad's graph root (its default is /var/lib/isulad)" },
    driver: { type: "string", description: "Storage driver of the OCI image store (default: the storage/<driver>-images found)" },
    embedded_manifests: { type: "string", description: "A directory of embedded-image *.manifest files, each with its .sgn" },
  },
  create(options, ctx) {
    if (options.driver !== undefined && !DRIVER_NAME.test(options.driver)) {
      throw new OptionError("driver", `driver ${quote(options.driver)} is not a storage driver name`);
    }
    return new IsuladStore(
      {
        root: resolve(ctx.baseDir, options.path),
        driver: options.driver,
        manifestsDir: options.embedded_manifests === undefined ? undefined : resolve(ctx.baseDir, options.embedded_manifests),
      },
      ctx,
    );
  },
});

/** What one source (db, OCI store, manifests dir) gave at a given stat key. */
interface Part<T> {
  key: string;
  value: T;
  /** False when an entry was skipped: such a part is re-read next time, as the entry may be fixed. */
  complete: boolean;
}

export class IsuladStore {
  private readonly problems: ProblemLog;
  private readonly manifests?: EmbeddedManifestDir;
  private db?: Part<EmbeddedImage[]>;
  private dir?: Part<EmbeddedImage[]>;
  private oci?: Part<ImageRecord[]>;
  private records?: ImageRecord[];

  constructor(
    private readonly options: IsuladOptions,
    private readonly ctx: BackendContext,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
    if (options.manifestsDir !== undefined) this.manifests = new EmbeddedManifestDir(options.manifestsDir, this.problems);
    ctx.log.info(NOT_MIRRORED, { backend: ctx.name, path: options.root });
    ctx.setNotice(NOT_MIRRORED);
  }

  private get root(): string {
    return this.options.root;
  }

  list(): ImageRecord[] {
    try {
      if (!statSync(this.root).isDirectory()) throw new StoreProblem("graph root is not a directory", this.root);
    } catch (e) {
      if (e instanceof StoreProblem) throw e;
      throw new StoreProblem(`no graph root: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, this.root);
    }
    const changed = [this.refreshDb(), this.refreshOci(), this.refreshDir()].some(Boolean);
    // Unchanged stores give the same array, so the registry can skip rebuilding its view.
    if (!changed && this.records) return this.records;
    this.records = this.merge();
    return this.records;
  }

  status(id: string): ImageRecord | undefined {
    return this.records?.find((r) => r.id === id);
  }

  /** ImageFsInfo: the whole store root is image data. */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    return [await directoryUsage(this.root, ctx.signal)];
  }

  watch(onChange: () => void): () => void {
    // sqlite.db (and its -wal) change in the graph root; images.json is replaced
    // inside its image directory, hence the recursive watch there; manifests
    // change in their directory. The poll interval covers the rest (a store
    // created later, a directory replaced).
    let imagesDir: string | undefined;
    try {
      imagesDir = this.ociStore()?.imagesDir;
    } catch (e) {
      this.problems.skip(e, "OCI image store");
    }
    const dirs = [
      { dir: this.root, recursive: false },
      ...(imagesDir === undefined ? [] : [{ dir: imagesDir, recursive: true }]),
      ...(this.options.manifestsDir === undefined ? [] : [{ dir: this.options.manifestsDir, recursive: false }]),
    ];
    return watchDirectories(dirs, onChange, this.problems);
  }

  /**
   * Re-reads one source when its stat key changed, or when its last read
   * skipped an entry (the entry may have been fixed since). Returns whether
   * what it holds changed.
   */
  private refresh<T>(part: Part<T> | undefined, key: string, read: () => { value: T; complete: boolean }): { part: Part<T>; changed: boolean } {
    if (part && part.key === key && part.complete) return { part, changed: false };
    const { value, complete } = read();
    const next = { key, value, complete };
    // A broken entry re-read with the same result is no change: the same array goes back.
    const same = part !== undefined && JSON.stringify(part.value) === JSON.stringify(value);
    return { part: same ? { ...part, key, complete } : next, changed: !same };
  }

  /** sqlite.db (and its write-ahead log). */
  private refreshDb(): boolean {
    const file = join(this.root, DB_FILE);
    const key = `${statKey(file)};${statKey(`${file}-wal`)}`;
    const { part, changed } = this.refresh(this.db, key, () => {
      // No database: iSulad built without embedded images, or none loaded yet.
      if (key === "-;-") return { value: [], complete: true };
      try {
        return { value: readEmbeddedDb(this.root, file, this.problems), complete: true };
      } catch (e) {
        this.problems.skip(e, "embedded images from the database");
        return { value: [], complete: false };
      }
    });
    this.db = part;
    return changed;
  }

  private ociStore(): IsuladImageStore | undefined {
    const storage = join(this.root, "storage");
    let driver = this.options.driver;
    if (driver === undefined) {
      const found = detectDrivers(storage);
      driver = found[0];
      const several = found.length > 1 ? `several image stores under ${storage}; reading ${driver}-images (set driver to choose)` : undefined;
      this.ctx.setNotice(several === undefined ? NOT_MIRRORED : `${several}; ${NOT_MIRRORED}`);
    }
    return driver === undefined ? undefined : new IsuladImageStore(this.root, driver, this.problems);
  }

  /** storage/<driver>-images and -layers. */
  private refreshOci(): boolean {
    let store: IsuladImageStore | undefined;
    let key: string;
    try {
      store = this.ociStore();
      key = store ? `${store.driver}:${store.key()}` : "none";
    } catch (e) {
      // The store directory vanished or cannot be listed: serve the embedded images.
      this.problems.skip(e, "OCI image store");
      store = undefined;
      key = "error";
    }
    const { part, changed } = this.refresh(this.oci, key, () => {
      if (key === "error") return { value: [], complete: false };
      return store ? store.scan() : { value: [], complete: true };
    });
    this.oci = part;
    return changed;
  }

  /** The embedded manifests directory, when configured. */
  private refreshDir(): boolean {
    const manifests = this.manifests;
    if (!manifests) return false;
    let key: string;
    try {
      key = [statKey(manifests.dir), ...listDir(manifests.dir).map((name) => `${name}=${statKey(join(manifests.dir, name))}`)].join(",");
    } catch (e) {
      this.problems.skip(e, "embedded manifests directory");
      key = "error";
    }
    const { part, changed } = this.refresh(this.dir, key, () => (key === "error" ? { value: [], complete: false } : manifests.scan()));
    this.dir = part;
    return changed;
  }

  /** OCI images, then embedded images; one record per ID (the same manifest in the db and the directory is one image). */
  private merge(): ImageRecord[] {
    const byId = new Map<string, ImageRecord>();
    const embedded = embeddedRecords([...(this.db?.value ?? []), ...(this.dir?.value ?? [])]);
    for (const record of [...(this.oci?.value ?? []), ...embedded]) {
      const existing = byId.get(record.id);
      if (!existing) byId.set(record.id, { ...record, repoTags: [...record.repoTags], repoDigests: [...record.repoDigests] });
      else for (const t of record.repoTags) if (!existing.repoTags.includes(t)) existing.repoTags.push(t);
    }
    return [...byId.values()];
  }
}
