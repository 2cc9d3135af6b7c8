// Small filesystem helpers for the iSulad backend, on top of common/files:
// resolving a path that must stay inside a store without reading it (sqlite
// files, layer images that may be large), and stat keys for change detection.
import { readdirSync, realpathSync, statSync, type Stats } from "node:fs";
import { resolve } from "node:path";
import { StoreProblem, isInside } from "../common/files";

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/**
 * The real path of `path`, which must resolve inside `root`: the same rule
 * readStoreFile applies, for files that are opened some other way.
 */
export function resolveInside(root: string, path: string): { real: string; stat: Stats } {
  let real: string;
  let realRoot: string;
  try {
    realRoot = realpathSync(root);
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

/** Directory entries, or a StoreProblem naming the directory. */
export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    throw new StoreProblem(`cannot list: ${errnoText(e)}`, dir);
  }
}

/** Identity of a file's current content for cache keys; "-" when it does not exist. */
export function statKey(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return "-";
  }
}

export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

export const SHA256_HEX = /^[a-f0-9]{64}$/;
