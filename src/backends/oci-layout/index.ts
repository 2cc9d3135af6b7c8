// Backend for an OCI image layout directory (`oci:` in skopeo's terms, what
// umoci and `buildah manifest push oci:` write). See
// docs/backends.md#oci-layout for the naming rules; the
// interpretation itself is in ../common/oci-images.ts, shared with the
// archives backend.
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  defineBackend,
  type BackendContext,
  type CallContext,
  type ContentBody,
  type FsUsage,
  type ImageRecord,
} from "../../backend/contract";
import { ProblemLog, ScanPaths, StoreProblem, notWritableHint, readStoreJson, statKey, watchDirectories, directoryUsage } from "../common/files";
import { layoutImages, parseConfig, repositoryOption, type LayoutSource } from "../common/oci-images";
import { BlobStoreContent } from "../common/oci-blob-store";
import { blobPath, readJsonBlob } from "../common/oci-blobs";
import { JOURNAL, finishRemoval, removeFromLayout } from "./remove";

/** A layout that looks unchanged is still walked at every this-many-th ImageFsInfo measurement. */
const FULL_WALK_EVERY = 10;

export default defineBackend({
  name: "oci-layout",
  apiVersion: BACKEND_API_VERSION,
  description: "An OCI image layout directory (oci-layout, index.json, blobs/)",
  options: {
    path: { type: "string", required: true, description: "The layout directory" },
    repository: {
      type: "string",
      description: "Repository for ref.name values that are bare tags (default localhost/<directory name>)",
    },
    writable: {
      type: "boolean",
      description: "Let RemoveImage (kubelet's image GC, crictl rmi) rewrite index.json and delete blobs (default false: read-only)",
    },
  },
  create(options, ctx) {
    const store = new OciLayoutStore(resolve(ctx.baseDir, options.path), options.repository, ctx, options.writable === true);
    // In the background: a large leftover must not hold up the start (create() has the backend's timeout).
    if (store.writable) store.recovery = store.finishInterruptedRemoval();
    return store;
  },
});

export class OciLayoutStore {
  private readonly source: LayoutSource;
  /** What was made of each blob (see LayoutSource.remember): blobs are content-addressed, so it never goes stale. */
  private facts = new Map<string, unknown>();
  /** Facts used by the scan in progress; the cache keeps only these afterwards. */
  private touched = new Map<string, unknown>();
  private cached?: { key: string; records: ImageRecord[] };
  /** The last scan's records, complete or not. */
  private records: ImageRecord[] = [];
  private readonly blobs: BlobStoreContent;
  private readonly problems: ProblemLog;
  private usage?: { key: string; value: FsUsage; reused: number };
  /** The start's finishing of an interrupted removal (writable layouts); never rejects. */
  recovery?: Promise<void>;
  private scanPaths = new ScanPaths("/");

  constructor(
    readonly root: string,
    repository: string | undefined,
    private readonly ctx: BackendContext,
    /** `writable = true`: RemoveImage may change this layout. */
    readonly writable = false,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
    this.source = {
      repository: repositoryOption(repository ?? `localhost/${basename(root).toLowerCase()}`),
      platform: ctx.platform,
      problems: this.problems,
      log: ctx.log,
      backend: ctx.name,
      path: root,
      blob: (digest) => readJsonBlob(this.root, digest, this.scanPaths),
      remember: (digest, what, derive) => this.remember(digest, what, derive),
    };
    this.blobs = new BlobStoreContent(root, this.problems);
  }

  list(): ImageRecord[] {
    const indexPath = join(this.root, "index.json");
    let key: string;
    try {
      const st = statSync(indexPath);
      key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (e) {
      throw new StoreProblem(`no index.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, indexPath);
    }
    // index.json is the layout's commit point: unchanged file, unchanged images.
    if (this.cached?.key === key) return this.cached.records;
    this.touched = new Map();
    this.scanPaths = new ScanPaths(this.root);
    const { records, complete, roots } = layoutImages(readStoreJson(this.root, indexPath).value, indexPath, this.source);
    // Drop the facts of images that left the layout, so churn cannot grow memory.
    this.facts = this.touched;
    // A scan that skipped a missing blob is retried next time, since the blob may yet arrive.
    this.cached = complete ? { key, records } : undefined;
    this.records = records;
    this.blobs.listed(roots);
    return records;
  }

  /**
   * Content for the mirror: a blob reachable from the image's index.json
   * entries, sent from its file as stored (byte for byte: a layout keeps the
   * registry's manifests and compressed layers). Undefined for anything else,
   * and for a reachable blob that is missing or damaged (logged once).
   */
  content(id: string, digest: string): ContentBody | undefined {
    return this.blobs.content(id, digest);
  }

  /**
   * A listed image with its raw config (an artifact: its manifest, which is
   * its ID), read from its blob again (records carry none; see LayoutSource.remember).
   */
  status(id: string): ImageRecord | undefined {
    const record = this.records.find((r) => r.id === id);
    if (!record) return undefined;
    try {
      const { value } = readJsonBlob(this.root, id);
      if (record.kind === "artifact") return { ...record, manifest: value };
      return { ...record, config: parseConfig(value)?.config };
    } catch (e) {
      this.problems.skip(e, `config of ${id}`);
      return record;
    }
  }

  /**
   * RemoveImage (writable layouts only; the registry asks only those): index.json
   * without the image's entries, then its blobs no other entry reaches (remove.ts).
   */
  async remove(id: string): Promise<void> {
    if (!this.writable) throw new Error("this layout is not writable");
    // A removal and the recovery of an interrupted one never overlap: each writes the journal.
    await this.recovery;
    let removal;
    try {
      removal = await removeFromLayout(this.root, id, this.source);
    } catch (e) {
      throw notWritableHint(e);
    }
    const { entries, blobsDeleted, blobsLeft, leftBecause } = removal;
    if (entries > 0) this.ctx.log.info("removed image from layout", { image: id, entries, blobsDeleted, path: this.root });
    // The image is gone (index.json no longer names it); what could not be deleted is retried by the next removal or start.
    if (blobsLeft > 0) this.ctx.log.warn("blobs of a removed image could not be deleted; retried at the next removal", { path: this.root, blobsLeft, error: leftBecause });
  }

  /** A removal killed between its steps left a journal: delete the blobs it names that nothing reaches. */
  async finishInterruptedRemoval(): Promise<void> {
    try {
      if (!existsSync(join(this.root, JOURNAL))) return;
      const { deleted, left, leftBecause } = await finishRemoval(this.root);
      this.ctx.log.warn("finished a removal that was interrupted", { path: this.root, blobsDeleted: deleted, blobsLeft: left.length, error: leftBecause });
    } catch (e) {
      this.problems.skip(new StoreProblem(`cannot finish an interrupted removal: ${(e as Error).message}`, join(this.root, JOURNAL)), "removal journal");
    }
  }

  /**
   * ImageFsInfo: the whole store root is image data. Blobs are written once
   * (content-addressed), so while the layout's directories and index.json are
   * unchanged its disk usage is too, and the last walk is reused: the walk
   * was all of the service's idle CPU (a few hundred ms a minute at 50,000
   * images). Every FULL_WALK_EVERY-th measurement walks regardless, for a
   * file written in place.
   */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    const key = this.layoutStatKey();
    if (this.usage?.key === key && this.usage.reused < FULL_WALK_EVERY - 1) {
      this.usage.reused++;
      return [this.usage.value];
    }
    const value = await directoryUsage(this.root, ctx.signal);
    this.usage = { key, value, reused: 0 };
    return [value];
  }

  /** The stats of the layout's directories and index.json: entries added or removed change a directory's. */
  private layoutStatKey(): string {
    const blobs = join(this.root, "blobs");
    let algorithms: string[] = [];
    try {
      algorithms = readdirSync(blobs).sort();
    } catch {
      // no blobs directory: its statKey says so
    }
    return [this.root, join(this.root, "index.json"), blobs, ...algorithms.map((a) => join(blobs, a))].map(statKey).join(" ");
  }

  watch(onChange: () => void): () => void {
    // index.json is replaced by rename or rewritten in place; both show as
    // events on the directory. The registry's poll interval covers the
    // directory itself being removed and recreated.
    return watchDirectories([this.root], onChange, this.problems);
  }

  private remember<T>(digest: string, what: string, derive: () => T): T {
    const key = `${what} ${digest}`;
    if (this.touched.has(key)) return this.touched.get(key) as T;
    // What an earlier scan made of a blob is never stale (content-addressed), but
    // a blob deleted since is a broken image: a fresh reader (`imagelet
    // plugins`, a restart) would skip it, so this scan reads it again too.
    const value = this.facts.has(key) && existsSync(blobPath(this.root, digest)) ? (this.facts.get(key) as T) : derive();
    this.touched.set(key, value);
    return value;
  }
}
