// Reading OCI blobs by digest, wherever they are kept under blobs/<alg>/<encoded>
// (an OCI layout directory, a layout inside a tarball, containerd's content
// store). The digest grammar (model/digest.ts) is checked before a digest
// becomes a path, so no digest can name a file outside blobs/; JSON blobs are
// checked against their digest before they are believed.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { digestParts } from "../../model/digest";
import { StoreProblem, parseJson, readStoreFile, resolveInside, type ScanPaths } from "./files";

/** The path of a blob below `root` (`blobs/<alg>/<encoded>`). Throws for a digest isDigest() refuses. */
export function blobPath(root: string, digest: string): string {
  return join(root, blobName(digest));
}

/** A blob's name relative to its layout's root, as a layout in a tarball names its member. */
export function blobName(digest: string): string {
  const { algorithm, encoded } = digestParts(digest);
  return `blobs/${algorithm}/${encoded}`;
}

/**
 * Reads a JSON blob (inside the store, bounded) and checks that its bytes
 * hash to the digest that named it.
 */
export function readJsonBlob(root: string, digest: string, paths?: ScanPaths): { value: unknown; size: number } {
  const path = blobPath(root, digest);
  return verifiedJsonBlob(readStoreFile(root, path, undefined, paths), digest, path);
}

/** Parses blob bytes after checking that they hash to the digest that named them (`path` is for messages). */
export function verifiedJsonBlob(bytes: Buffer, digest: string, path: string): { value: unknown; size: number } {
  const { algorithm, encoded } = digestParts(digest);
  const actual = createHash(algorithm).update(bytes).digest("hex");
  if (actual !== encoded) throw new StoreProblem(`content does not match its digest (${algorithm}:${actual})`, path);
  return { value: parseJson(bytes, path), size: bytes.length };
}

/**
 * A blob stored whole in its own file, for the mirror to send as it is: its
 * real path (resolved inside the store: a symlink out of it is refused) and
 * its length. Throws StoreProblem when it is missing, not a regular file, or
 * not `size` bytes long (its descriptor's size: content of another length
 * cannot hash to the digest, and would be sent in vain).
 */
export function blobFile(root: string, digest: string, size: number, paths?: ScanPaths): { path: string; size: number } {
  const path = blobPath(root, digest);
  const { real, stat } = resolveInside(root, path, paths);
  if (!stat.isFile()) throw new StoreProblem("not a regular file", path);
  if (stat.size !== size) throw new StoreProblem(`${stat.size} bytes where its descriptor says ${size}`, path);
  return { path: real, size };
}
