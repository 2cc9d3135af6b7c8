// ImageFsInfo's view of the disks: the stores' usage added up per filesystem,
// each named by its real mount point. kubelet reads only the first entry and
// asks cadvisor about `fs_id.mountpoint` for capacity, so the primary store's
// filesystem comes first and the mount point must be a real path.
import { readFileSync, realpathSync, statSync } from "node:fs";
import type { FsUsage } from "../backend/contract";

export interface FilesystemUsage {
  mountpoint: string;
  usedBytes: number;
  inodesUsed: number;
  /** When the usage was measured, in ms since the epoch. */
  measuredAt: number;
}

/** Mount points from /proc/self/mountinfo (field 5, with its octal escapes undone). */
export function mountPoints(mountinfo = "/proc/self/mountinfo"): string[] {
  let text: string;
  try {
    text = readFileSync(mountinfo, "utf8");
  } catch {
    return ["/"];
  }
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined && p.startsWith("/"))
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))));
  return points.length > 0 ? points : ["/"];
}

/** The mount point of the filesystem holding `path`: the longest mount point above its real path. */
export function mountPointOf(path: string, points: readonly string[] = mountPoints()): string {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return path;
  }
  let best = "/";
  for (const p of points) {
    if ((real === p || real.startsWith(p === "/" ? "/" : `${p}/`)) && p.length > best.length) best = p;
  }
  return best;
}

/** Adds up usages per filesystem (by device), in the order the stores are given (primary first). */
export function groupByFilesystem(usages: readonly FsUsage[], measuredAt: number, points: readonly string[] = mountPoints()): FilesystemUsage[] {
  const byDevice = new Map<number, FilesystemUsage>();
  for (const u of usages) {
    let dev: number;
    try {
      dev = statSync(u.path).dev;
    } catch {
      continue; // the store went away since it was measured
    }
    const fs = byDevice.get(dev);
    if (fs) {
      fs.usedBytes += u.usedBytes;
      fs.inodesUsed += u.inodesUsed;
    } else {
      byDevice.set(dev, { mountpoint: mountPointOf(u.path, points), usedBytes: u.usedBytes, inodesUsed: u.inodesUsed, measuredAt });
    }
  }
  return [...byDevice.values()];
}
