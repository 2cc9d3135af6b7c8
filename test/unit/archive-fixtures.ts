// The archive fixtures (scripts/make-fixtures-archives) as the archives
// backend tests use them: copies in a temporary store directory, opened with
// a logger the test can read.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BackendContext, Platform } from "../../src/backend/contract";
import { ArchiveDirStore } from "../../src/backends/archives/index";
import { memoryLogger } from "./helpers";

export const ARCHIVE_FIXTURES = resolve(import.meta.dir, "../fixtures/archives");
export const ARCHIVE_STORE = join(ARCHIVE_FIXTURES, "store");
const amd64: Platform = { os: "linux", architecture: "amd64" };

/** Temporary directories, removed by cleanup() (call it from afterEach). */
export class TempDirs {
  private readonly dirs: string[] = [];
  constructor(private readonly prefix: string) {}

  make(): string {
    const dir = mkdtempSync(join(tmpdir(), this.prefix));
    this.dirs.push(dir);
    return dir;
  }

  cleanup(): void {
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/** A store directory inside `parent` holding copies of the named fixture tarballs. */
export function fixtureStore(parent: string, ...files: string[]): string {
  const dir = join(parent, "store");
  mkdirSync(dir);
  for (const f of files) copyFileSync(join(ARCHIVE_STORE, f), join(dir, f));
  return dir;
}

export function openArchives(path: string, repository?: string) {
  const log = memoryLogger();
  const ctx: BackendContext = { name: "test", log, baseDir: "/", platform: amd64, setNotice() {} };
  return { store: new ArchiveDirStore(path, repository, ctx), log };
}
