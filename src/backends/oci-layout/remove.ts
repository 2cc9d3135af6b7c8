// Removing an image from an OCI layout directory (RemoveImage on a
// `writable = true` oci-layout). index.json is the layout's commit point, so a
// removal is two steps, in this order:
//   1. index.json is replaced (temp file, fsync, rename, fsync of the
//      directory) without the entries that stand for the image: from here on
//      every reader, imagelet or skopeo, sees the image gone and the rest whole;
//   2. the blobs only those entries reached are deleted.
// Blobs reached by a remaining entry stay (shared layers, the one empty config
// of every artifact). Before step 1 the blobs to delete are written to a
// journal, so a process killed between the steps leaves a store that reads
// correctly and a list of leftovers that the next removal, or the next start,
// deletes. Only blobs the removed entries reached are ever deleted: a blob
// no entry names may be another writer's copy in progress (skopeo writes
// blobs before index.json).
import { closeSync, existsSync, fchmodSync, fchownSync, fsyncSync, lstatSync, openSync, readdirSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { isDigest } from "../../model/digest";
import { StoreProblem, isInside, parseJson, readStoreJson, readStoreFile } from "../common/files";
import { entryImageId, type LayoutSource } from "../common/oci-images";
import { blobPath, readJsonBlob } from "../common/oci-blobs";
import { isIndexType, isManifestType, parseDescriptor, parseIndex, type Descriptor } from "../common/oci";
import { isRecord } from "../../model/json";

/** The removal journal: the blobs a removal will delete once index.json no longer reaches them. */
export const JOURNAL = ".imagelet-removal.json";
/** Temporary files of an atomic write start with this (left behind only by a killed process). */
const TEMP_PREFIX = ".imagelet-tmp-";

/** The event loop gets a turn at least this often (ms) while a removal walks a large layout. */
const YIELD_EVERY_MS = 10;

/** Resolves at once, or on the next turn of the event loop when YIELD_EVERY_MS have passed since the last one. */
function yielder(): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    if (performance.now() - last < YIELD_EVERY_MS) return undefined;
    return new Promise<void>((r) =>
      setImmediate(() => {
        last = performance.now();
        r();
      }),
    );
  };
}

/** What one removal did, for the log. */
export interface LayoutRemoval {
  entries: number;
  blobsDeleted: number;
  /** Blobs it should have deleted but could not (kept in the journal for the next removal or start). */
  blobsLeft: number;
  /** Why the first of them could not be deleted. */
  leftBecause?: string;
}

/** What deleting a removal's blobs did. */
interface Collected {
  deleted: number;
  /** Blobs that could not be deleted (not ENOENT): they stay in the journal. */
  left: string[];
  leftBecause?: string;
}

/** index.json is read again just before it is replaced; a removal retries this often when another writer changed it meanwhile. */
const INDEX_ATTEMPTS = 3;

/** index.json is not the one the removal read (another writer, skopeo, replaced it). */
class IndexChanged extends Error {}

/**
 * Removes every index.json entry that stands for image `id`, then the blobs
 * only they reached. An image the layout does not hold removes nothing.
 */
export async function removeFromLayout(root: string, id: string, src: LayoutSource): Promise<LayoutRemoval> {
  // What an earlier removal could not delete joins this one's journal, so it is never forgotten.
  const leftovers = (await finishRemoval(root)).left;
  const pause = yielder();
  const indexPath = join(root, "index.json");
  for (let attempt = 1; ; attempt++) {
    const { value: index, bytes: indexBytes } = readStoreJson(root, indexPath);
    if (!isRecord(index) || !Array.isArray(index.manifests)) throw new StoreProblem("not an image index (no manifests array)", indexPath);
    const keep: unknown[] = [];
    const drop: Descriptor[] = [];
    for (const raw of index.manifests) {
      await pause();
      const entry = parseDescriptor(raw);
      let entryId: string | undefined;
      try {
        entryId = entry && entryImageId(src, entry);
      } catch {
        // An entry this host cannot resolve (a blob missing) is not this image: kept as it is.
      }
      if (entry && entryId === id) drop.push(entry);
      else keep.push(raw);
    }
    if (drop.length === 0) return { entries: 0, blobsDeleted: 0, blobsLeft: leftovers.length };
    const candidates = await reachableBlobs(root, drop);
    for (const d of leftovers) candidates.add(d);
    checkBlobDirectories(root, candidates);
    writeJournal(root, id, [...candidates]);
    // The walk above yields to the event loop and takes a while on a large
    // layout: another writer (skopeo copy to this layout) may have replaced
    // index.json meanwhile. Replacing it with a copy of the one read before
    // would lose that writer's entry, so index.json is compared just before
    // the rename, and a changed one is read again. What is left between the
    // comparison and the rename is one read and a rename (skopeo takes no
    // lock either, so nothing can close it).
    const unchanged = () => {
      if (!readStoreFile(root, indexPath).equals(indexBytes)) throw new IndexChanged();
    };
    try {
      writeFileAtomic(root, "index.json", JSON.stringify({ ...index, manifests: keep }), indexPath, unchanged);
    } catch (e) {
      if (!(e instanceof IndexChanged)) throw e;
      writeJournal(root, id, leftovers);
      if (attempt < INDEX_ATTEMPTS) continue;
      throw new StoreProblem(`index.json changed during each of ${INDEX_ATTEMPTS} attempts (another writer?); nothing was removed, try again`, indexPath);
    }
    const collected = await collect(root, candidates);
    writeJournal(root, id, collected.left);
    return { entries: drop.length, blobsDeleted: collected.deleted, blobsLeft: collected.left.length, leftBecause: collected.leftBecause };
  }
}

/** The journal names `blobs` (written atomically), or is deleted when there are none. */
function writeJournal(root: string, id: string, blobs: readonly string[]): void {
  if (blobs.length === 0) unlinkIfThere(join(root, JOURNAL));
  else writeFileAtomic(root, JOURNAL, `${JSON.stringify({ removing: id, blobs })}\n`);
}

/**
 * Finishes a removal a killed process left half done: deletes the journal's
 * blobs that index.json does not reach (none, if it was killed before
 * index.json was replaced), then the journal and stray temporary files.
 * Blobs that cannot be deleted stay in the journal.
 */
export async function finishRemoval(root: string): Promise<Collected> {
  for (const name of readdirSync(root)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    try {
      unlinkIfThere(join(root, name));
    } catch {
      // Tidying only (a directory under such a name is not ours): it must not stop a removal.
    }
  }
  const journalPath = join(root, JOURNAL);
  if (!existsSync(journalPath)) return { deleted: 0, left: [] };
  let blobs: string[] = [];
  let removing = "";
  try {
    const journal = parseJson(readStoreFile(root, journalPath), journalPath) as { blobs?: unknown; removing?: unknown };
    if (Array.isArray(journal?.blobs)) blobs = journal.blobs.filter(isDigest);
    if (typeof journal?.removing === "string") removing = journal.removing;
  } catch {
    // A journal cut short was written before index.json was touched (it is renamed into place): nothing to finish.
  }
  const collected = await collect(root, new Set(blobs));
  writeJournal(root, removing, collected.left);
  return collected;
}

/**
 * Deletes the candidate blobs the current index.json does not reach. A blob
 * that cannot be deleted (EISDIR, EPERM on an immutable file) is left and
 * named in the answer: the image is already gone from index.json, and one
 * stuck blob must not fail this removal, nor hold up every later one.
 */
async function collect(root: string, candidates: ReadonlySet<string>): Promise<Collected> {
  const out: Collected = { deleted: 0, left: [] };
  if (candidates.size === 0) return out;
  const indexPath = join(root, "index.json");
  const unreadable: string[] = [];
  const live = await reachableBlobs(root, parseIndex(readStoreJson(root, indexPath).value, indexPath).index.manifests, unreadable);
  if (unreadable.length > 0) {
    // A kept manifest or index is there but cannot be read (linked out of the
    // layout, too large, unreadable): what it reaches is unknown and may be
    // any candidate (a layer it shares), so nothing is deleted now; the
    // journal keeps the candidates for a removal that can read it.
    out.left = [...candidates].filter((d) => !live.has(d));
    out.leftBecause = `kept blob ${unreadable[0]} cannot be read, so what it reaches is unknown; nothing was deleted`;
    return out;
  }
  const dirs = new Set<string>();
  const realRoot = realpathSync(root);
  for (const digest of candidates) {
    if (live.has(digest)) continue;
    const path = blobPath(root, digest);
    // blobs/<algorithm> linked out of the layout: its files are not the layout's to delete.
    let dir: string;
    try {
      dir = realpathSync(dirname(path));
    } catch {
      continue;
    }
    if (!isInside(realRoot, dir)) continue; // refused before anything changed (checkBlobDirectories)
    try {
      if (unlinkIfThere(path)) out.deleted++;
    } catch (e) {
      out.left.push(digest);
      out.leftBecause ??= `${(e as NodeJS.ErrnoException).code ?? (e as Error).message}: ${path}`;
      continue;
    }
    dirs.add(dir);
  }
  for (const dir of dirs) fsyncDirectory(dir);
  return out;
}

/**
 * Refuses, before anything changes, a layout whose blobs/<algorithm>
 * directory links out of it: the files there are not the layout's to delete.
 */
function checkBlobDirectories(root: string, digests: ReadonlySet<string>): void {
  const realRoot = realpathSync(root);
  for (const dir of new Set([...digests].map((d) => dirname(blobPath(root, d))))) {
    let real: string;
    try {
      real = realpathSync(dir);
    } catch {
      continue; // no such directory: nothing to delete in it
    }
    if (!isInside(realRoot, real)) throw new StoreProblem("blob directory links out of the layout; refusing to delete from it", dir);
  }
}

/**
 * Every blob the descriptors reach: manifests, nested indexes (every
 * platform's), configs and layers. A blob that cannot be read is still
 * counted but not followed; a manifest or index that is there but cannot be
 * read is added to `unreadable` (a missing one reaches nothing that can be
 * known, and stands for an image already broken).
 */
export async function reachableBlobs(root: string, from: readonly Descriptor[], unreadable?: string[]): Promise<Set<string>> {
  const seen = new Set<string>();
  const queue = [...from];
  const pause = yielder();
  while (queue.length > 0) {
    await pause();
    const d = queue.pop()!;
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    if (!isIndexType(d.mediaType) && !isManifestType(d.mediaType)) continue;
    let value: unknown;
    try {
      value = readJsonBlob(root, d.digest).value;
    } catch {
      if (unreadable && lexists(blobPath(root, d.digest))) unreadable.push(d.digest);
      continue;
    }
    if (!isRecord(value)) continue;
    const children: unknown[] = [
      ...(Array.isArray(value.manifests) ? value.manifests : []),
      value.config,
      ...(Array.isArray(value.layers) ? value.layers : []),
    ];
    for (const child of children) {
      const c = parseDescriptor(child);
      if (c) queue.push(c);
    }
  }
  return seen;
}

/**
 * Replaces `root/name` atomically: a temporary file in the same directory,
 * written and fsynced, given the mode and owner of the file it replaces
 * (`like`; the unit's UMask would make it private), renamed over it, and the
 * directory fsynced so the rename survives a power cut. `beforeRename` may
 * throw to give up (the temporary file is removed, nothing replaced).
 */
function writeFileAtomic(root: string, name: string, text: string, like?: string, beforeRename?: () => void): void {
  const temp = join(root, `${TEMP_PREFIX}${process.pid}-${name}`);
  // Created anew (O_EXCL): a symlink or file already under this name is never
  // followed or written through (the store's directory may be writable by others).
  unlinkIfThere(temp);
  const fd = openSync(temp, "wx", 0o644);
  try {
    if (like !== undefined) {
      const before = statSync(like);
      fchmodSync(fd, before.mode & 0o7777);
      try {
        fchownSync(fd, before.uid, before.gid);
      } catch {
        // Not allowed to give it away: it stays ours, with the same mode.
      }
    }
    const bytes = Buffer.from(text);
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkIfThere(temp);
    throw e;
  }
  closeSync(fd);
  try {
    beforeRename?.();
    renameSync(temp, join(root, name));
  } catch (e) {
    unlinkIfThere(temp);
    throw e;
  }
  fsyncDirectory(root);
}

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Whether anything (a broken symlink too) is at `path`. */
function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function unlinkIfThere(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}
