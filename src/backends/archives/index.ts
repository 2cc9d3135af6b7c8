// Backend for a directory of image tarballs, the way edge devices usually
// receive images: docker-archive (`docker save`, skopeo, podman save),
// oci-archive, and Docker >= 25 `docker save` (an OCI layout in the tar), as
// .tar or .tar.gz. Only tar headers and small JSON members are read, and a
// tarball is read again only when its size, mtime or inode changes, so a
// rescan of a large directory costs one stat per tarball.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, readdirSync, realpathSync, unlinkSync, type Stats } from "node:fs";
import { join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  RemovalRefused,
  defineBackend,
  type BackendContext,
  type CallContext,
  type ContentBody,
  type FsUsage,
  type ImageRecord,
} from "../../backend/contract";
import { isDigest } from "../../model/digest";
import { ProblemLog, StoreProblem, notWritableHint, resolveInside, statKey, watchDirectories, directoryUsage } from "../common/files";
import { mergeNames, repositoryOption } from "../common/oci-images";
import { archiveImages, contentBody, type ArchiveContext, type ArchiveImages, type ContentPart } from "./archive";
import type { TarballFile } from "./member-stream";
import { isGzipMagic, scanGzipTar, scanPlainTar, type TarContents } from "./tar";

/** Plain tars are parsed synchronously; the event loop gets a turn at least this often (ms) during a scan. */
const YIELD_EVERY_MS = 10;

/** The file names this backend reads; anything else in the directory is ignored. */
const TARBALL = /\.(tar|tar\.gz|tgz)$/;

export default defineBackend({
  name: "archives",
  apiVersion: BACKEND_API_VERSION,
  description: "Archive directory (docker-archive, oci-archive, Docker >= 25 save; .tar and .tar.gz)",
  options: {
    path: { type: "string", required: true, description: "The directory of image tarballs" },
    repository: {
      type: "string",
      description: "Repository for bare-tag ref.names in OCI archives (default localhost/<tarball name>)",
    },
    writable: {
      type: "boolean",
      description: "Let RemoveImage delete tarballs that hold only the image removed (default false: read-only)",
    },
  },
  create(options, ctx) {
    return new ArchiveDirStore(resolve(ctx.baseDir, options.path), options.repository, ctx, options.writable === true);
  },
});

/** One tarball's images, valid while its stat key is unchanged. */
interface CachedTarball {
  key: string;
  records: ImageRecord[];
  /** The file as listed, and by image ID what the mirror may serve from it (none for a tarball that could not be read). */
  file?: TarballFile;
  content?: ArchiveImages["content"];
}

/**
 * The repository a tarball's bare-tag ref.names belong to when none is
 * configured: `localhost/<file name without .tar/.tar.gz/.tgz>`, with every
 * run of characters a repository may not hold made one `-`.
 */
export function defaultRepository(fileName: string): string {
  const stem = fileName.replace(TARBALL, "").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return `localhost/${stem || "archive"}`;
}

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

export class ArchiveDirStore {
  private readonly problems: ProblemLog;
  private readonly repository?: string;
  private tarballs = new Map<string, CachedTarball>();
  private merged?: { fingerprint: string; records: ImageRecord[] };
  private notify?: () => void;
  /** Tarballs opened and parsed since start: how tests see that unchanged ones are not re-read. */
  tarballsRead = 0;

  constructor(
    readonly root: string,
    repository: string | undefined,
    private readonly ctx: BackendContext,
    /** `writable = true`: RemoveImage may delete tarballs. */
    readonly writable = false,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
    this.repository = repository === undefined ? undefined : repositoryOption(repository);
  }

  async list(call?: CallContext): Promise<ImageRecord[]> {
    const { realRoot, names } = this.tarballNames();
    const seen = new Map<string, CachedTarball>();
    let lastYield = performance.now();
    for (const name of names) {
      // Serve requests (and let the call timeout fire) during a long first scan.
      if (performance.now() - lastYield > YIELD_EVERY_MS) {
        await new Promise((r) => setImmediate(r));
        lastYield = performance.now();
      }
      if (call?.signal.aborted) return this.interrupted(seen.size, names.length);
      const path = join(this.root, name);
      const cached = await this.tarball(realRoot, path, name);
      if (cached) seen.set(path, cached);
    }
    // Tarballs that left the directory leave the cache with them.
    this.tarballs = seen;
    const fingerprint = [...seen].map(([path, t]) => `${path}\0${t.key}`).join("\n");
    if (this.merged?.fingerprint !== fingerprint) this.merged = { fingerprint, records: mergeByImage([...seen.values()], this.writable) };
    return this.merged.records;
  }

  /**
   * RemoveImage: deletes every tarball holding the image. A tarball is a unit
   * (rewriting one to drop an image would be a copy of everything else in
   * it), so one that also holds another image makes the removal refused,
   * before anything is deleted.
   */
  async remove(id: string, call?: CallContext): Promise<void> {
    if (!this.writable) throw new Error("this archive directory is not writable");
    // The directory as it is now, not as last listed: a tarball replaced since
    // (`mv new.tar app.tar`) may hold other images, and one added since may hold
    // this one. Unchanged tarballs cost a stat each. From here to the last
    // unlink nothing awaits.
    await this.list(call);
    const holders = [...this.tarballs].filter(([, t]) => t.records.some((r) => r.id === id));
    const shared = holders.filter(([, t]) => t.records.some((r) => r.id !== id));
    if (shared.length > 0) {
      const list = shared.map(([path, t]) => `${path} (also holds ${t.records.filter((r) => r.id !== id).map((r) => r.repoTags[0] ?? r.id).join(", ")})`);
      throw new RemovalRefused(
        `tarball${shared.length > 1 ? "s" : ""} ${list.join("; ")}: imagelet deletes only tarballs that hold nothing but the image removed; nothing was deleted`,
      );
    }
    for (const [path] of holders) {
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw notWritableHint(e);
      }
      this.tarballs.delete(path);
    }
    if (holders.length === 0) return;
    const dir = openSync(this.root, "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.merged = undefined;
    this.ctx.log.info("removed image's tarballs", { image: id, tarballs: holders.map(([p]) => p).join(",") });
  }

  status(id: string): ImageRecord | undefined {
    return this.merged?.records.find((r) => r.id === id);
  }

  /**
   * Content for the mirror: a piece of the image's content from the first
   * tarball (in name order) that holds it: an OCI archive's blobs as stored;
   * a docker-archive's written manifest, config member and layer members
   * (their uncompressed tars). Undefined for anything the image does not
   * reach, for a tarball changed since it was listed (served again after the
   * next scan), and for a part the tarball lacks (logged once).
   */
  content(id: string, digest: string): ContentBody | undefined {
    if (!isDigest(digest)) return undefined;
    let broken: ContentPart | undefined;
    for (const { file, content } of this.tarballs.values()) {
      const part = content?.get(id)?.get(digest);
      if (!part || !file) continue;
      if (part.problem) {
        broken ??= part;
        continue;
      }
      if (statKey(file.real) !== file.key) {
        this.ctx.log.debug("tarball changed since it was listed; its content is served again after the next scan", { path: file.path });
        continue;
      }
      return contentBody(file, part);
    }
    if (broken) this.problems.skip(broken.problem, `blob for the mirror (image ${id})`);
    return undefined;
  }

  /** ImageFsInfo: the whole store root is image data. */
  async fsInfo(ctx: CallContext): Promise<FsUsage[]> {
    return [await directoryUsage(this.root, ctx.signal)];
  }

  watch(onChange: () => void): () => void {
    this.notify = onChange;
    // A tarball copied in, renamed, replaced or removed shows as an event on
    // the directory; the poll interval covers the directory itself going away.
    const stop = watchDirectories([this.root], onChange, this.problems);
    return () => {
      this.notify = undefined;
      stop();
    };
  }

  /**
   * The registry gave up on this call (its timeout). The tarballs read so
   * far stay cached, and a change notification makes the registry list
   * again once this call has settled, so a first scan too big for one call
   * finishes over several.
   */
  private interrupted(done: number, total: number): never {
    this.notify?.();
    throw new Error(`scan interrupted by the call timeout after ${done} of ${total} tarballs; continuing`);
  }

  /** The tarball names in the directory, sorted (the order decides tag conflicts and merged fields). */
  private tarballNames(): { realRoot: string; names: string[] } {
    try {
      return { realRoot: realpathSync(this.root), names: readdirSync(this.root).filter((n) => TARBALL.test(n)).sort() };
    } catch (e) {
      throw new StoreProblem(`cannot list the archive directory: ${errnoText(e)}`, this.root);
    }
  }

  /** One tarball's images, from the cache when unchanged; undefined when it cannot be opened now. */
  private async tarball(realRoot: string, path: string, name: string): Promise<CachedTarball | undefined> {
    let real: string;
    let st: Stats;
    try {
      ({ real, stat: st } = resolveInside(this.root, path, realRoot));
    } catch (e) {
      // Not cached: a permission or link fixed later must be picked up without a content change.
      this.problems.skip(e, "tarball");
      return undefined;
    }
    if (!st.isFile()) {
      // A FIFO would block the read forever; a directory is no tarball.
      this.problems.report("tarball skipped: not a regular file", path);
      return undefined;
    }
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    const cached = this.tarballs.get(path);
    if (cached?.key === key) return cached;
    let fd: number;
    try {
      fd = openSync(real, "r");
    } catch (e) {
      // Not cached either: a permission fixed later (chmod leaves size and mtime alone) must be picked up.
      this.problems.skip(new StoreProblem(`cannot read: ${errnoText(e)}`, path), "tarball");
      return undefined;
    }
    let fresh: CachedTarball = { key, records: [] };
    try {
      const file: TarballFile = { path, real, gzip: isGzip(fd), key };
      fresh = { key, file, ...(await this.readTarball(fd, file, name)) };
    } catch (e) {
      // A truncated or corrupt tarball stays skipped until it changes (a copy still in progress will).
      this.problems.skip(e, "tarball");
    } finally {
      closeSync(fd);
    }
    // Cached at once, so a scan interrupted after this tarball keeps it.
    this.tarballs.set(path, fresh);
    return fresh;
  }

  private async readTarball(fd: number, file: TarballFile, name: string): Promise<ArchiveImages> {
    this.tarballsRead++;
    const { path, real } = file;
    try {
      const contents: TarContents = file.gzip ? await scanGzipTar(path, real) : scanPlainTar(fd, fstatSync(fd).size, path);
      return archiveImages(contents, file, this.archiveContext(name));
    } catch (e) {
      if (e instanceof StoreProblem) throw e;
      // A read error, or a file that shrank under us: the tarball, not the service, is at fault.
      throw new StoreProblem(`cannot read: ${errnoText(e)}`, path);
    }
  }

  private archiveContext(name: string): ArchiveContext {
    return {
      repository: this.repository ?? repositoryOption(defaultRepository(name)),
      platform: this.ctx.platform,
      problems: this.problems,
      log: this.ctx.log,
      backend: this.ctx.name,
    };
  }
}

/** Whether the file starts with the gzip magic (names lie; bytes do not). */
function isGzip(fd: number): boolean {
  const magic = Buffer.alloc(2);
  return readSync(fd, magic, 0, 2, 0) === 2 && isGzipMagic(magic);
}

/**
 * One record per image across tarballs: the union of their tags and digests;
 * other fields from the first tarball (in name order) that has them. Copies,
 * so the cached per-tarball records are never changed.
 */
function mergeByImage(tarballs: readonly CachedTarball[], writable: boolean): ImageRecord[] {
  const byId = new Map<string, ImageRecord>();
  for (const t of tarballs) {
    // A writable directory cannot remove an image that shares a tarball: it is reported pinned.
    const shared = writable && new Set(t.records.map((r) => r.id)).size > 1;
    for (const r of t.records) {
      const existing = byId.get(r.id);
      if (!existing) {
        byId.set(r.id, { ...r, repoTags: [...r.repoTags], repoDigests: [...r.repoDigests], ...(shared ? { removable: false } : {}) });
        continue;
      }
      if (shared) existing.removable = false;
      mergeNames(existing, r);
      existing.config ??= r.config;
      existing.user ??= r.user;
      existing.created ??= r.created;
      existing.labels ??= r.labels;
      existing.annotations ??= r.annotations;
      existing.platform ??= r.platform;
      existing.manifest ??= r.manifest;
      existing.target ??= r.target;
    }
  }
  return [...byId.values()];
}
