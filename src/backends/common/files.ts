// Reading files out of an image store someone else writes. Every backend
// reads through here, so the rules hold everywhere: a file is read only if it
// resolves (symlinks followed) to a regular file inside the store's root, and
// only up to a size bound; problems are StoreProblem values that carry the
// path, for the one-line log the registry and backends write.
import { lstatSync, readFileSync, readdirSync, realpathSync, statSync, watch, type FSWatcher, type Stats } from "node:fs";
import type { FsUsage } from "../../backend/contract";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import type { Logger } from "../../backend/contract";

/** Manifests, indexes, configs and store metadata are small; anything bigger is not one (or is hostile). */
export const MAX_JSON_BYTES = 16 * 1024 * 1024;

/** A problem with one store file: the entry is skipped and the problem logged with the path. */
export class StoreProblem extends Error {
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(message);
    this.name = "StoreProblem";
  }
}

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** Whether `path` is `root` or below it (both already resolved). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/**
 * The real path and stat of `path` (relative to `root`, or absolute), which
 * must resolve inside `root`: a symlink that leaves the store, or loops, is
 * refused with the path. `realRoot` saves resolving the root again when a
 * caller reads many files of one store.
 */
export function resolveInside(root: string, path: string, known?: string | ScanPaths): { real: string; stat: Stats } {
  if (known instanceof ScanPaths) {
    const file = known.regularFile(resolve(root, path));
    if (file) return file;
  }
  let realRoot: string;
  let real: string;
  try {
    realRoot = known instanceof ScanPaths ? known.realRoot() : (known ?? realpathSync(root));
    real = realpathSync(resolve(root, path));
  } catch (e) {
    throw new StoreProblem(`cannot read: ${errnoText(e)}`, path);
  }
  if (!isInside(realRoot, real)) throw new StoreProblem(`resolves outside the store (${real})`, path);
  try {
    return { real, stat: statSync(real) };
  } catch (e) {
    throw new StoreProblem(`cannot read: ${errnoText(e)}`, path);
  }
}

/**
 * Real paths of a store's directories during one scan that reads many files
 * from a few directories (a layout's blobs/sha256): a file that is not itself
 * a symlink is checked with one lstat and its directory's real path, resolved
 * once, instead of resolving its whole path (two realpath calls per blob were
 * a third of a 10,000-image layout's start-up). Made per scan, so a directory
 * replaced by a symlink is seen by the next one.
 */
export class ScanPaths {
  private readonly dirs = new Map<string, string>();
  private root?: string;

  constructor(private readonly storeRoot: string) {}

  realRoot(): string {
    this.root ??= realpathSync(this.storeRoot);
    return this.root;
  }

  /** The real path and stat of a regular file inside the store; undefined for anything else (left to the full check). */
  regularFile(path: string): { real: string; stat: Stats } | undefined {
    let stat: Stats;
    let realDir: string | undefined;
    try {
      stat = lstatSync(path);
      if (!stat.isFile()) return undefined;
      const dir = dirname(path);
      realDir = this.dirs.get(dir);
      if (realDir === undefined) {
        realDir = realpathSync(dir);
        this.dirs.set(dir, realDir);
      }
      const real = join(realDir, basename(path));
      return isInside(this.realRoot(), real) ? { real, stat } : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * Reads a file that must resolve inside `root` (see resolveInside), and is a
 * regular file (a FIFO would block the read forever) of at most `maxBytes`.
 */
export function readStoreFile(root: string, path: string, maxBytes = MAX_JSON_BYTES, known?: string | ScanPaths): Buffer {
  const { real, stat } = resolveInside(root, path, known);
  if (!stat.isFile()) throw new StoreProblem("not a regular file", path);
  if (stat.size > maxBytes) throw new StoreProblem(`larger than ${maxBytes} bytes`, path);
  try {
    return readFileSync(real);
  } catch (e) {
    throw new StoreProblem(`cannot read: ${errnoText(e)}`, path);
  }
}

/** Identity of a file's current content, for cache keys; "-" when it does not exist. */
export function statKey(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return "-";
  }
}

/** Parses JSON bytes, naming the file when they are not JSON. */
export function parseJson(bytes: Buffer, path: string): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new StoreProblem(`not valid JSON: ${(e as Error).message}`, path);
  }
}

/** readStoreFile + parseJson. */
export function readStoreJson(root: string, path: string, maxBytes = MAX_JSON_BYTES): { value: unknown; bytes: Buffer } {
  const bytes = readStoreFile(root, path, maxBytes);
  return { value: parseJson(bytes, path), bytes };
}

/**
 * A write to a store failed for want of permission (a read-only mount, the
 * unit's ProtectSystem=strict): the error, with what the operator can do.
 */
export function notWritableHint(e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code !== "EROFS" && code !== "EACCES" && code !== "EPERM") return e;
  const path = (e as NodeJS.ErrnoException).path;
  return new StoreProblem(
    `${code}: imagelet may not write here. A store with writable = true must be writable by imagelet; ` +
      "under imagelet.service add its path to ReadWritePaths= (packaging/systemd/writable-stores.conf, docs/kubelet.md)",
    path ?? "",
  );
}

/**
 * Logs each distinct store problem once (per backend instance), with the
 * backend and the path: a broken file is reported when it breaks, not on
 * every re-scan.
 */
export class ProblemLog {
  private readonly seen = new Set<string>();
  constructor(
    private readonly log: Logger,
    private readonly backend: string,
  ) {}

  report(message: string, path: string): void {
    const key = `${path}\0${message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.log.warn(message, { backend: this.backend, path });
  }

  /** Logs a StoreProblem; rethrows anything else (a bug, not bad input). */
  skip(e: unknown, what: string): void {
    if (!(e instanceof StoreProblem)) throw e;
    this.report(`${what} skipped: ${e.message}`, e.path);
  }
}

/**
 * Watches directories for a backend's watch() hook: any event means "the
 * store may have changed", and the registry re-lists (debounced). A directory
 * that does not exist yet is left to the registry's poll interval; any other
 * failure to watch is reported once.
 */
export function watchDirectories(
  dirs: readonly (string | { dir: string; recursive: boolean })[],
  onChange: () => void,
  problems: ProblemLog,
): () => void {
  const watchers: FSWatcher[] = [];
  for (const entry of dirs) {
    const { dir, recursive } = typeof entry === "string" ? { dir: entry, recursive: false } : entry;
    try {
      const w = watch(dir, { persistent: false, recursive }, () => onChange());
      w.on("error", (e) => problems.report(`watch failed: ${e.message}`, dir));
      watchers.push(w);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") problems.report(`cannot watch (changes are seen at the poll interval): ${code ?? (e as Error).message}`, dir);
    }
  }
  return () => {
    for (const w of watchers) w.close();
  };
}

/**
 * du-style usage of a directory tree for ImageFsInfo: allocated blocks and
 * entries, symlinks not followed, hard links counted once. It runs in the
 * background and stops when `signal` aborts. The system calls are synchronous,
 * in slices of a few hundred entries with a turn of the event loop between
 * them so calls keep being answered: the promise-based lstat cost about ten
 * times the CPU (560 ms against 57 ms for a layout of 10,000 images), and the
 * walk repeats every fs_info_interval while the service is otherwise idle.
 */
export async function directoryUsage(path: string, signal?: AbortSignal): Promise<FsUsage> {
  const seen = new Set<string>();
  let usedBytes = 0;
  let inodesUsed = 0;
  const pending = [path];
  while (pending.length > 0) {
    if (signal?.aborted) throw signal.reason ?? new Error("aborted");
    for (let slice = 0; slice < WALK_SLICE && pending.length > 0; slice++) {
      const current = pending.pop()!;
      let st: Stats;
      try {
        st = lstatSync(current);
      } catch {
        continue; // gone meanwhile, or unreadable: not counted
      }
      if (st.nlink > 1 && !st.isDirectory()) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      usedBytes += st.blocks * 512;
      inodesUsed += 1;
      if (st.isDirectory()) {
        try {
          for (const name of readdirSync(current)) pending.push(`${current}/${name}`);
        } catch {
          // an unreadable directory counts as itself only
        }
      }
    }
    if (pending.length > 0) await new Promise((r) => setImmediate(r));
  }
  return { path, usedBytes, inodesUsed };
}

/** Entries directoryUsage() visits between turns of the event loop (about a millisecond's work). */
const WALK_SLICE = 256;

/**
 * containers/storage makeBigDataBaseName (store.go), also used by iSulad: a
 * key made only of [a-z0-9.] is its own file name; any other key is stored
 * as "=" + base64(key).
 */
export function bigDataFileName(key: string): string {
  return /^[a-z0-9.]*$/.test(key) ? key : `=${Buffer.from(key, "utf8").toString("base64")}`;
}
