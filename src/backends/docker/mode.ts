// Which image store a Docker root holds. Docker keeps its classic store in
// image/<storage driver>/; with the containerd image store (the default for
// fresh Docker Engine 29 installs, or features.containerd-snapshotter in
// daemon.json) images live in containerd instead, and image/ holds nothing we
// can serve. That must be said, not shown as an empty store.
import { lstatSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ProblemLog, StoreProblem, readStoreJson } from "../common/files";

export const DEFAULT_ROOT = "/var/lib/docker";
export const DEFAULT_DAEMON_CONFIG = "/etc/docker/daemon.json";

export type StoreLocation =
  /** `dir` is image/<driver>; `others` are further driver directories that were not chosen. */
  | { mode: "classic"; driver: string; dir: string; others: string[] }
  | { mode: "containerd"; reason: string };

export interface LocateOptions {
  root: string;
  /** Forces image/<driver>/ instead of detecting it. */
  driver?: string;
  /** daemon.json to consult for features.containerd-snapshotter, if any. */
  daemonConfig?: string;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

function mtimeOf(path: string): number | undefined {
  try {
    const st = lstatSync(path);
    return st.isFile() ? st.mtimeMs : undefined;
  } catch {
    return undefined;
  }
}

/**
 * features.containerd-snapshotter from daemon.json: true or false when the
 * file says so, undefined when it is absent or says nothing. A broken file is
 * logged and ignored, as it says nothing we can trust.
 */
export function snapshotterSetting(daemonConfig: string, problems: ProblemLog): boolean | undefined {
  try {
    lstatSync(daemonConfig);
  } catch (e) {
    if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return undefined;
  }
  let value: unknown;
  try {
    // The operator's own config, which may well be a symlink elsewhere (e.g. config management): only "/" bounds it.
    value = readStoreJson("/", daemonConfig).value;
  } catch (e) {
    problems.skip(e, "daemon config");
    return undefined;
  }
  const features = typeof value === "object" && value !== null ? (value as Record<string, unknown>).features : undefined;
  const setting = typeof features === "object" && features !== null ? (features as Record<string, unknown>)["containerd-snapshotter"] : undefined;
  return typeof setting === "boolean" ? setting : undefined;
}

/** The driver directories under image/ that hold a repositories.json, newest first. */
function driverDirs(imageDir: string): { driver: string; mtime: number }[] {
  let names: string[];
  try {
    names = readdirSync(imageDir);
  } catch {
    return [];
  }
  const found: { driver: string; mtime: number }[] = [];
  for (const driver of names) {
    if (!isDirectory(join(imageDir, driver))) continue;
    const mtime = mtimeOf(join(imageDir, driver, "repositories.json"));
    if (mtime !== undefined) found.push({ driver, mtime });
  }
  return found.sort((a, b) => b.mtime - a.mtime || a.driver.localeCompare(b.driver));
}

/** Decides where the images are; throws StoreProblem when the root is not a Docker root at all. */
export function locateStore(opts: LocateOptions, problems: ProblemLog): StoreLocation {
  const { root } = opts;
  try {
    if (!statSync(root).isDirectory()) throw new StoreProblem("Docker root is not a directory", root);
  } catch (e) {
    if (e instanceof StoreProblem) throw e;
    throw new StoreProblem(`Docker root is missing: ${errno(e) ?? (e as Error).message}`, root);
  }
  const setting = opts.daemonConfig === undefined ? undefined : snapshotterSetting(opts.daemonConfig, problems);
  if (setting === true) return { mode: "containerd", reason: `${opts.daemonConfig} sets features.containerd-snapshotter` };
  const imageDir = join(root, "image");
  const candidates = opts.driver === undefined ? driverDirs(imageDir) : driverDirs(imageDir).filter((c) => c.driver === opts.driver);
  const chosen = candidates[0];
  if (chosen) {
    return { mode: "classic", driver: chosen.driver, dir: join(imageDir, chosen.driver), others: candidates.slice(1).map((c) => c.driver) };
  }
  // Docker writes repositories.json when its classic store starts, so its absence next to containerd's state is that mode.
  if (setting === undefined && isDirectory(join(root, "containerd"))) {
    return { mode: "containerd", reason: `${join(root, "containerd")} exists and ${imageDir} holds no repositories.json` };
  }
  const where = opts.driver === undefined ? join(imageDir, "<driver>", "repositories.json") : join(imageDir, opts.driver, "repositories.json");
  throw new StoreProblem("no classic Docker image store: repositories.json not found", where);
}
