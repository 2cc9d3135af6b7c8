// Backend for containerd's image store: the store of most Kubernetes nodes
// (containerd itself, k3s and MicroK8s embed it, Docker Engine 29 keeps its
// images in it). Read-only and with no containerd needed: the image records
// come from meta.db (bbolt, read without its lock: bbolt.ts, metadata.ts),
// the content from the content store, and they are shown as containerd's CRI
// plugin shows them (images.ts). See docs/backends.md#containerd.
import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  OptionError,
  defineBackend,
  type BackendContext,
  type CallContext,
  type ContentBody,
  type FsUsage,
  type ImageRecord,
} from "../../backend/contract";
import { quote } from "../../model/reference";
import { BlobStoreContent } from "../common/oci-blob-store";
import { ProblemLog, StoreProblem, directoryUsage, statKey, watchDirectories } from "../common/files";
import { BoltError } from "./bbolt";
import { ContainerdImages } from "./images";
import { KNOWN_DB_VERSION, SchemaError, readImages, type MetadataSnapshot } from "./metadata";

export const DEFAULT_NAMESPACE = "k8s.io";
export const METADATA_DIR = "io.containerd.metadata.v1.bolt";
export const CONTENT_DIR = "io.containerd.content.v1.content";
/** containerd's namespace grammar (pkg/identifiers: alphanumerics joined by single [._-], at most 76). */
const NAMESPACE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const MAX_NAMESPACE = 76;
/**
 * How often watch() compares meta.db's stat, for filesystems without inotify
 * events (and a missed event): a change is seen within this, well inside the
 * second the service promises. A stat costs microseconds.
 */
const POLL_MS = 250;
/**
 * A snapshot that kept changing is tried again after this (the last good
 * answer is served meanwhile), doubled after each retry that also found it
 * changing, up to MAX_RETRY_MS: a store committing faster than it can be read
 * would otherwise be read (and given up on) five times every 100 ms for as
 * long as it is busy, a core spent on answers that are never used.
 */
const RETRY_MS = 100;
const MAX_RETRY_MS = 1600;
const NO_IMAGES: readonly ImageRecord[] = Object.freeze([]);

export interface ContainerdStoreOptions {
  /** containerd's root (`containerd --root`). */
  root: string;
  namespace: string;
  /** Names that are neither tags nor repo digests (Docker's `moby-dangling@<digest>`). */
  ignoreName?: (name: string) => boolean;
  /** Sets the backend's notice (`imagelet plugins`); the docker backend, which sets its own, passes none. */
  notice?: (notice: string | undefined) => void;
}

export function namespaceOption(namespace: string): string {
  if (namespace.length > MAX_NAMESPACE || !NAMESPACE.test(namespace)) {
    throw new OptionError("namespace", `namespace ${quote(namespace)} is not a containerd namespace (letters, digits and single . _ - between them, at most ${MAX_NAMESPACE})`);
  }
  return namespace;
}

export default defineBackend({
  name: "containerd",
  apiVersion: BACKEND_API_VERSION,
  description: "containerd's image store (meta.db and the content store; containerd, k3s, MicroK8s, Docker 29)",
  options: {
    path: { type: "string", required: true, description: "containerd's root (containerd --root; usually /var/lib/containerd)" },
    namespace: { type: "string", description: `The containerd namespace (default ${DEFAULT_NAMESPACE}, CRI's; Docker uses moby)` },
  },
  create(options, ctx) {
    const namespace = namespaceOption(options.namespace ?? DEFAULT_NAMESPACE);
    return new ContainerdStore({ root: resolve(ctx.baseDir, options.path), namespace, notice: (n) => ctx.setNotice(n) }, ctx);
  },
});

export class ContainerdStore {
  readonly metaPath: string;
  readonly contentRoot: string;
  private readonly problems: ProblemLog;
  private readonly images: ContainerdImages;
  private cached?: { key: string; records: readonly ImageRecord[] };
  /** The last answer, complete or not: served while a snapshot cannot be had, and for status(). */
  private records: readonly ImageRecord[] = NO_IMAGES;
  private readonly blobs: BlobStoreContent;
  /**
   * The commit and content-store stat the last answer was made from. A commit
   * is its txid and meta checksum: a txid alone is shared by another file put
   * in place (a restored backup, a copied root), whose meta differs in root,
   * high-water mark or freelist.
   */
  private lastRead?: { commit: string; contentKey: string };
  private onChange?: () => void;
  private retryTimer?: ReturnType<typeof setTimeout>;
  /** The wait before the next retry of a snapshot that kept changing (see RETRY_MS). */
  private retryMs = RETRY_MS;

  constructor(
    readonly opts: ContainerdStoreOptions,
    ctx: Pick<BackendContext, "name" | "log" | "platform">,
  ) {
    this.metaPath = join(opts.root, METADATA_DIR, "meta.db");
    this.contentRoot = join(opts.root, CONTENT_DIR);
    this.problems = new ProblemLog(ctx.log, ctx.name);
    this.images = new ContainerdImages({
      contentRoot: this.contentRoot,
      platform: ctx.platform,
      problems: this.problems,
      log: ctx.log,
      backend: ctx.name,
      metaPath: this.metaPath,
      ignoreName: opts.ignoreName,
    });
    this.blobs = new BlobStoreContent(this.contentRoot, this.problems);
  }

  get root(): string {
    return this.opts.root;
  }

  /** Whether meta.db exists (Docker's containerd store before its first image has none). */
  hasMetadata(): boolean {
    try {
      return statSync(this.metaPath).isFile();
    } catch {
      return false;
    }
  }

  list(): readonly ImageRecord[] {
    // Taken before the read: a commit that lands during it changes the key, so the next list reads again.
    const metaKey = statKey(this.metaPath);
    const contentKey = this.contentKey();
    const key = `${metaKey} ${contentKey}`;
    if (this.cached?.key === key) return this.cached.records;
    if (metaKey === "-") {
      try {
        statSync(this.opts.root);
      } catch (e) {
        throw new StoreProblem(`containerd root is missing: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, this.opts.root);
      }
      throw new StoreProblem("no meta.db: containerd has not run on this root", this.metaPath);
    }
    let snapshot;
    try {
      snapshot = this.readMetadata();
    } catch (e) {
      if (e instanceof BoltError && e.kind === "changing") {
        // Busy, not broken: keep the last whole answer and look again shortly. Before the
        // first one there is none, and an empty list would be a wrong answer: that is an error.
        this.scheduleRetry();
        if (this.lastRead) return this.records;
        throw new StoreProblem(`meta.db cannot be read yet: ${e.message}`, this.metaPath);
      }
      if (e instanceof BoltError || e instanceof SchemaError) throw new StoreProblem(`meta.db cannot be read: ${e.message}`, this.metaPath);
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== undefined) throw new StoreProblem(`cannot read: ${code}`, this.metaPath);
      throw e;
    }
    this.retryMs = RETRY_MS;
    if (snapshot.dbVersion !== undefined && snapshot.dbVersion > KNOWN_DB_VERSION) {
      this.problems.report(`metadata schema v1.${snapshot.dbVersion} is newer than v1.${KNOWN_DB_VERSION}; read as v1 (its revisions only add)`, this.metaPath);
    }
    if (!snapshot.namespaceExists) {
      this.problems.report(`namespace ${quote(this.opts.namespace)} does not exist (yet): no images`, this.metaPath);
    }
    this.opts.notice?.(
      snapshot.namespaceExists
        ? undefined
        : `namespace ${this.opts.namespace} does not exist in ${this.root} (yet); it has ${snapshot.namespaces.length === 0 ? "none" : snapshot.namespaces.join(", ")}`,
    );
    // meta.db rewritten without a new commit (bbolt touches its file in place) and the same content: same answer.
    const commit = `${snapshot.meta.txid}:${snapshot.meta.checksum}`;
    if (this.lastRead?.commit === commit && this.lastRead.contentKey === contentKey) {
      this.cached = { key, records: this.records };
      return this.records;
    }
    const records = this.images.images(snapshot.images, this.lastRead?.contentKey !== contentKey);
    this.lastRead = { commit, contentKey };
    this.records = records;
    this.blobs.listed(this.images.roots);
    // Kept even when an image was skipped for missing content: content arrives as a new file
    // in blobs/sha256 (containerd renames it in from its ingest directory), which changes the key.
    this.cached = { key, records };
    return records;
  }

  /** One consistent read of the namespace's image records (a method so that tests can make meta.db busy). */
  protected readMetadata(): MetadataSnapshot {
    return readImages(this.metaPath, this.opts.namespace);
  }

  /** A listed image with its whole config, read again (records carry none). */
  status(id: string): ImageRecord | undefined {
    const record = this.records.find((r) => r.id === id);
    if (!record) return undefined;
    try {
      return { ...record, config: this.images.rawConfig(id) };
    } catch (e) {
      this.problems.skip(e, `config of ${id}`);
      return record;
    }
  }

  /**
   * Content for the mirror: a blob reachable from the targets of the
   * image's names (the index, each platform's manifest the store has, their
   * configs and layers), sent from its file in the content store as stored:
   * containerd keeps the registry's bytes. Undefined for anything else, and
   * for a blob the store does not have (content GC'd, a layer never fetched),
   * logged once with its path.
   */
  content(id: string, digest: string): ContentBody | undefined {
    return this.blobs.content(id, digest);
  }

  /** ImageFsInfo: containerd's root holds the content and the unpacked snapshots. */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    return [await directoryUsage(this.opts.root, ctx.signal)];
  }

  /**
   * containerd rewrites meta.db in place (bbolt), and adds and removes blobs:
   * events on those directories, and a stat poll for filesystems that send
   * none. Only a changed stat reaches the registry, and list() reads again
   * only when meta.db has a new commit or the content changed.
   */
  watch(onChange: () => void): () => void {
    // containerd commits for leases, containers, snapshots and content as well
    // as images, so on a busy node meta.db is written every few milliseconds,
    // each write an event: the registry's debounce coalesces them, and still
    // re-lists at least every MAX_DEBOUNCE_WAIT_MS while they keep coming.
    this.onChange = onChange;
    const stopWatching = watchDirectories(
      [join(this.opts.root, METADATA_DIR), join(this.contentRoot, "blobs"), join(this.contentRoot, "blobs", "sha256")],
      onChange,
      this.problems,
    );
    let last = this.pollKey();
    const timer = setInterval(() => {
      const now = this.pollKey();
      if (now !== last) {
        last = now;
        onChange();
      }
    }, POLL_MS);
    timer.unref?.();
    return () => {
      clearInterval(timer);
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.onChange = undefined;
      stopWatching();
    };
  }

  private pollKey(): string {
    return `${statKey(this.metaPath)} ${this.contentKey()}`;
  }

  /** The content store's directories: blobs are added and removed as whole files. */
  private contentKey(): string {
    return `${statKey(join(this.contentRoot, "blobs"))} ${statKey(join(this.contentRoot, "blobs", "sha256"))}`;
  }

  private scheduleRetry(): void {
    if (this.retryTimer || !this.onChange) return;
    const wait = this.retryMs;
    this.retryMs = Math.min(wait * 2, MAX_RETRY_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.onChange?.();
    }, wait);
    this.retryTimer.unref?.();
  }
}
