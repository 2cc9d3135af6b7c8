// Small filesystem helpers for the iSulad backend, on top of common/files.
import { readdirSync, statSync } from "node:fs";
import { StoreProblem } from "../common/files";

export { resolveInside, statKey } from "../common/files";

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** Directory entries, or a StoreProblem naming the directory. */
export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    throw new StoreProblem(`cannot list: ${errnoText(e)}`, dir);
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
