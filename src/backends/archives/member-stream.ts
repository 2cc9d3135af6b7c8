// The bytes of one tarball member, streamed for the mirror, for the members
// it cannot send as a plain file region: a member inside a gzipped tarball
// (which cannot be seeked: it is decompressed from the start and skipped up
// to the member) and a docker-archive layer kept gzip-compressed in the tar
// (served decompressed, so that its digest is its diff_id). Nothing is held
// in memory beyond one chunk.
import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import type { TarMember } from "./tar";

/** Plain tarballs are read in chunks this big. */
const CHUNK = 256 * 1024;

/** A tarball as it was when it was listed: a member's offset means something only in that file. */
export interface TarballFile {
  /** The path as configured, for messages. */
  path: string;
  /** Its real path (resolved inside the store when listed). */
  real: string;
  /** The tar is gzip-compressed as a whole. */
  gzip: boolean;
  /** `ino:size:mtimeMs` when listed. */
  key: string;
}

export class TarballChanged extends Error {
  constructor(path: string) {
    super(`${path} changed since it was listed`);
    this.name = "TarballChanged";
  }
}

/** Opens the tarball, refusing a file that is not the one listed (replaced, or rewritten in place). */
async function openListed(file: TarballFile): Promise<FileHandle> {
  const handle = await open(file.real, "r");
  const st = await handle.stat();
  if (`${st.ino}:${st.size}:${st.mtimeMs}` !== file.key) {
    await handle.close();
    throw new TarballChanged(file.path);
  }
  return handle;
}

/** `input` decompressed; destroying the result destroys the input, and a read error of the input fails the result. */
function gunzipped(input: Readable): Readable {
  const gunzip = createGunzip();
  // pipe() does not pass an error on; without this a reader would wait forever.
  input.on("error", (e) => gunzip.destroy(e));
  gunzip.on("close", () => input.destroy());
  return input.pipe(gunzip);
}

/** `length` bytes of `source` from `skip` on; throws when it ends before. */
async function* slice(source: AsyncIterable<Uint8Array>, skip: number, length: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  let left = length;
  if (left === 0) return;
  for await (const chunk of source) {
    signal.throwIfAborted();
    let piece = chunk;
    if (skip > 0) {
      const drop = Math.min(skip, piece.length);
      skip -= drop;
      piece = piece.subarray(drop);
    }
    if (piece.length === 0) continue;
    if (piece.length > left) piece = piece.subarray(0, left);
    left -= piece.length;
    yield piece;
    if (left === 0) return;
  }
  if (left > 0) throw new Error(`ends ${left} bytes early`);
}

/** The raw bytes of a member from `start` to its end. */
export async function* memberBytes(file: TarballFile, member: TarMember, start: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const handle = await openListed(file);
  try {
    if (!file.gzip) {
      const end = member.offset + member.size;
      for (let pos = member.offset + start; pos < end; ) {
        signal.throwIfAborted();
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - pos));
        const { bytesRead } = await handle.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) throw new Error(`${file.path} ends inside ${member.name}`);
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
      return;
    }
    // A gzip stream cannot be entered in the middle: decompress from the start and skip.
    const gunzip = gunzipped(handle.createReadStream({ highWaterMark: CHUNK, autoClose: false }));
    try {
      yield* slice(gunzip, member.offset + start, member.size - start, signal);
    } finally {
      gunzip.destroy();
    }
  } finally {
    await handle.close();
  }
}

/** A gzip-compressed member, decompressed, from `start` to `size` (its decompressed length). */
export async function* gunzippedMember(file: TarballFile, member: TarMember, start: number, size: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const gunzip = gunzipped(Readable.from(memberBytes(file, member, 0, signal)));
  try {
    yield* slice(gunzip, start, size - start, signal);
  } finally {
    gunzip.destroy();
  }
}
