// Re-creating a layer's uncompressed tar, byte for byte, from its tar-split
// and the layer's unpacked files (containers/storage, Docker's classic store):
// the tar-split keeps every byte of the original stream except file payloads
// (header blocks, PAX/GNU records, padding, the end marker) as "segments",
// and names each payload with its size and CRC-64 (reference-layer-
// reconstruction.md §1). Replaying it needs no tar library: segments are
// copied as they are, payloads read from the layer's directory.
//
// Hand-written: no npm implementation of tar-split exists (a search of the
// npm registry's package list for tar-split/tarsplit/tar_split found none),
// and tar writers such as tar-stream cannot re-emit other writers' headers.
//
// What the layer directory can hold is not trusted (a rootless store is
// written by an unprivileged user, and any store can change under a
// download), so before a payload's first byte is yielded:
//   - its name is a relative path with no `..` and no NUL;
//   - it is opened with O_NOFOLLOW|O_NONBLOCK and the kernel's name for the
//     open file (/proc/self/fd/N) must be exactly <real layer dir>/<name>, so
//     no component of the path was a symlink;
//   - fstat says a regular file of exactly the member's size;
//   - its CRC-64 matches the tar-split's.
// A file over SMALL_FILE_BYTES is read twice through the same descriptor:
// once for the CRC, once to send while checking it again; a change between
// the two makes the stream throw at the end of that member. A file whose CRC
// this process checked before, under the same identity (verifiedMembers),
// is read once and not CRC'd again: the mirror's sha256 of the whole layer,
// with its last chunk held back, still keeps a changed file from reaching a
// client as a complete layer. A stream the mirror opens trusted (its
// sha256 skipped: this layer's inputs hashed to its digest before) reads no
// CRC at all and instead checks each input's identity against the ones the
// last whole stream recorded, at open and after reading (layer-inputs.ts).
// Anything wrong throws a StoreProblem naming the path: the mirror then aborts
// the connection, so a client's digest check fails rather than taking bytes
// from outside the layer.
import { closeSync, constants, createReadStream, fstatSync, openSync, readSync, readlinkSync, statSync, type BigIntStats } from "node:fs";
import { open, realpath, readlink, type FileHandle } from "node:fs/promises";
import { createGunzip } from "node:zlib";
import type { ContentBody } from "../../backend/contract";
import { Crc64 } from "./crc64";
import { StoreProblem, isInside, resolveInside, statKey } from "./files";
import { fileIdentity, nowNs, VerifiedFiles, type FileIdentity } from "../../model/verified-files";
import { OCI_LAYER_TAR } from "./written-manifest";
import { inputsKey, LayerRecords, StreamInputs, type LayerInputs } from "./layer-inputs";
import { isRecord } from "../../model/json";

/** One tar-split line: raw bytes to copy, or a member's payload to read from disk. */
export type TarSplitEntry =
  | { type: "segment"; bytes: Buffer }
  /** `name`: the member path, cleaned ("a/b", "" for the root); `crc`: 8 bytes, present whenever size > 0. */
  | { type: "file"; name: Buffer; size: number; crc?: Buffer };

/** A layer to re-create: its tar-split and the directory holding its files, both inside `storeRoot`. */
export interface LayerSource {
  storeRoot: string;
  tarSplit: string;
  diffDir: string;
}

export interface TarSplitSummary {
  /** The tar's exact length: segment bytes plus member sizes. */
  size: number;
  /** Members with a payload to read from disk. */
  files: number;
}

/** A line longer than this is not tar-split (segments hold at most 1 MiB, base64 4/3 of it). */
const MAX_LINE_BYTES = 16 * 1024 * 1024;
/** Files up to this size are read once into memory (synchronously), checked, then yielded. */
const SMALL_FILE_BYTES = 256 * 1024;
/** Read size for bigger files (both passes): 1 MiB chunks left more garbage between collections (RSS grew ~38-42 MiB streaming 256 MiB, against ~32-40 MiB at 512 KiB) for no measurable speed. */
const CHUNK_BYTES = 512 * 1024;
/** Chunks of a big member read ahead of the one being sent. */
const READ_AHEAD = 2;
/** Small pieces (headers, small files) are joined into outputs of about this size. */
const OUTPUT_BYTES = 64 * 1024;
const TYPE_FILE = 1;
const TYPE_SEGMENT = 2;
const BLOCK = 512;
/** Opened without following a final symlink, without blocking on a FIFO, never as a controlling tty. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/**
 * A member name from a tar-split, cleaned to a relative path ("./a//b/" →
 * "a/b"). Names are untrusted: absolute paths, `..` components and NUL bytes
 * are refused (throws an Error saying which).
 */
export function memberPath(raw: Buffer): Buffer {
  if (raw.includes(0)) throw new Error("has a NUL byte");
  if (raw[0] === 0x2f) throw new Error("is absolute");
  const parts: Buffer[] = [];
  let from = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i < raw.length && raw[i] !== 0x2f) continue;
    const part = raw.subarray(from, i);
    from = i + 1;
    if (part.length === 0 || (part.length === 1 && part[0] === 0x2e)) continue;
    if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) throw new Error("has a .. component");
    parts.push(part);
  }
  const slash = Buffer.from("/");
  return Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [p] : [slash, p])));
}

function quoteName(name: Buffer): string {
  return JSON.stringify(name.toString("utf8"));
}

/**
 * The typeflag of the header block a member's payload follows (the last 512
 * bytes of the segment before it), refusing what tar-split cannot replay:
 * sparse members (GNU 'S', or PAX "NN GNU.sparse.*=" records), whose payload on disk
 * is the expanded file, and a header type that carries no data but claims a size.
 */
function checkHeader(segment: Buffer | undefined, name: Buffer, size: number): void {
  if (size === 0) return;
  if (segment === undefined || segment.length < BLOCK) throw new Error(`member ${quoteName(name)} has no header before its payload`);
  const typeflag = segment[segment.length - BLOCK + 156];
  if (typeflag === 0x53 || segment.includes(" GNU.sparse.")) throw new Error(`member ${quoteName(name)} is sparse, which tar-split cannot re-create`);
  // '0', NUL (old regular file) and '7' (contiguous file) carry data.
  if (typeflag !== 0x30 && typeflag !== 0 && typeflag !== 0x37) {
    throw new Error(`member ${quoteName(name)} has type ${JSON.stringify(String.fromCharCode(typeflag ?? 0))} but a payload of ${size} bytes`);
  }
}

/** Parses one line's JSON object into an entry (names not yet cleaned). */
function parseEntry(line: Buffer): { type: typeof TYPE_FILE | typeof TYPE_SEGMENT; name?: Buffer; size: number; payload?: Buffer } {
  let raw: unknown;
  try {
    raw = JSON.parse(line.toString("utf8"));
  } catch {
    // Not the parser's message: it quotes the text, and the file may not be what it claims to be.
    throw new Error("not a JSON line");
  }
  if (!isRecord(raw)) throw new Error("not a JSON object");
  const type = raw.type;
  if (type !== TYPE_FILE && type !== TYPE_SEGMENT) throw new Error(`unknown type ${JSON.stringify(type)}`);
  const size = raw.size ?? 0;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new Error(`size ${JSON.stringify(size)} is not a byte count`);
  const payload = raw.payload ?? undefined;
  if (payload !== undefined && typeof payload !== "string") throw new Error("payload is not base64");
  let name: Buffer | undefined;
  if (typeof raw.name_raw === "string" && raw.name_raw !== "") name = Buffer.from(raw.name_raw, "base64");
  else if (typeof raw.name === "string") name = Buffer.from(raw.name, "utf8");
  else if (raw.name !== undefined || raw.name_raw !== undefined) throw new Error("name is not a string");
  return { type, name, size, payload: payload === undefined ? undefined : Buffer.from(payload, "base64") };
}

/** The lines of a gzip-compressed file (an open descriptor, closed here), streamed: never the whole file in memory. */
async function* gzipLines(fd: number): AsyncGenerator<Buffer> {
  const source = createReadStream("", { fd, autoClose: true });
  const gunzip = createGunzip();
  source.on("error", (e) => gunzip.destroy(e));
  source.pipe(gunzip);
  const parts: Buffer[] = [];
  let partBytes = 0;
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(10, from); nl >= 0; nl = chunk.indexOf(10, from)) {
        const piece = chunk.subarray(from, nl);
        from = nl + 1;
        if (parts.length === 0) {
          yield piece;
        } else {
          parts.push(piece);
          yield Buffer.concat(parts);
          parts.length = 0;
          partBytes = 0;
        }
      }
      if (from < chunk.length) {
        parts.push(chunk.subarray(from));
        partBytes += chunk.length - from;
        if (partBytes > MAX_LINE_BYTES) throw new Error(`a line is longer than ${MAX_LINE_BYTES} bytes`);
      }
    }
    if (parts.length > 0) yield Buffer.concat(parts);
  } finally {
    source.destroy();
    gunzip.destroy();
  }
}

/**
 * The entries of a tar-split file (`<id>.tar-split.gz`, `tar-split.json.gz`),
 * streamed and checked: names cleaned and confined, no duplicate paths (as
 * tar-split's own packer refuses them), no sparse members, a CRC for every
 * payload. The file must be a regular file inside `storeRoot`. Throws a
 * StoreProblem naming the file and the line.
 */
export async function* readTarSplit(storeRoot: string, path: string, signal?: AbortSignal, inputs?: StreamInputs): AsyncGenerator<TarSplitEntry> {
  const { real, stat } = resolveInside(storeRoot, path);
  if (!stat.isFile()) throw new StoreProblem("tar-split is not a regular file", path);
  const { fd, identity } = openConfined(Buffer.from(real), path, "tar-split");
  try {
    inputs?.tarSplit(identity, path);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  const seen = new Set<string>();
  let lastSegment: Buffer | undefined;
  let lineNo = 0;
  try {
    for await (const line of gzipLines(fd)) {
      lineNo++;
      if (signal?.aborted) throw signal.reason ?? new Error("aborted");
      if (line.length === 0 || (line.length === 1 && line[0] === 13)) continue;
      const entry = parseEntry(line);
      if (entry.type === TYPE_SEGMENT) {
        const bytes = entry.payload ?? Buffer.alloc(0);
        lastSegment = bytes;
        if (bytes.length > 0) yield { type: "segment", bytes };
        continue;
      }
      if (entry.name === undefined) throw new Error("a file entry has no name");
      let name: Buffer;
      try {
        name = memberPath(entry.name);
      } catch (e) {
        throw new Error(`member ${quoteName(entry.name)} ${(e as Error).message}`);
      }
      const key = name.toString("latin1");
      if (seen.has(key)) throw new Error(`member ${quoteName(name)} appears twice (duplicate paths are not supported by tar-split)`);
      seen.add(key);
      checkHeader(lastSegment, name, entry.size);
      lastSegment = undefined;
      if (entry.size > 0 && entry.payload?.length !== 8) throw new Error(`member ${quoteName(name)} has no CRC-64 to check its ${entry.size} bytes against`);
      yield { type: "file", name, size: entry.size, crc: entry.size > 0 ? entry.payload : undefined };
    }
    // Read through the descriptor, now closed: the file at its path must still be the one opened.
    if (inputs) StreamInputs.unchanged(identity, statSync(real, { bigint: true }), path, "tar-split");
  } catch (e) {
    if (e instanceof StoreProblem || (signal?.aborted && e === signal.reason)) throw e;
    throw new StoreProblem(`corrupt tar-split${lineNo > 0 ? ` (line ${lineNo})` : ""}: ${(e as Error).message}`, path);
  }
}

/** The tar's length and member count, from the tar-split alone (no layer file is opened). */
export async function summarizeTarSplit(storeRoot: string, path: string, signal?: AbortSignal): Promise<TarSplitSummary> {
  let size = 0;
  let files = 0;
  for await (const entry of readTarSplit(storeRoot, path, signal)) {
    if (entry.type === "segment") size += entry.bytes.length;
    else if (entry.size > 0) {
      size += entry.size;
      files++;
    }
  }
  return { size, files };
}

/**
 * summarizeTarSplit, remembered by the file's stat identity: content() runs
 * for every HEAD and GET, and a layer's tar-split never changes in place.
 */
export class TarSplitSizes {
  private readonly known = new Map<string, TarSplitSummary>();
  constructor(private readonly limit = 4096) {}

  async get(storeRoot: string, path: string, signal?: AbortSignal): Promise<TarSplitSummary> {
    const key = `${path}\0${statKey(path)}`;
    const hit = this.known.get(key);
    if (hit) return hit;
    const summary = await summarizeTarSplit(storeRoot, path, signal);
    if (this.known.size >= this.limit) this.known.delete(this.known.keys().next().value!);
    this.known.set(key, summary);
    return summary;
  }
}

/** Reads exactly `length` bytes at `position` into `buffer`, or throws (the file got shorter). */
async function readExactly(file: FileHandle, buffer: Buffer, length: number, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new StoreProblem("the file became shorter while it was read", path);
    done += bytesRead;
  }
}

function crcMismatch(path: string, name: Buffer, when: string): StoreProblem {
  return new StoreProblem(`member ${quoteName(name)}: content does not match the layer's tar-split (CRC-64 ${when})`, path);
}

function sameCrc(actual: Crc64, expected: Buffer): boolean {
  return actual.digest().equals(expected);
}

/**
 * Opens `expected` (a resolved path) for reading, confined: not through a
 * symlink in any component (the kernel's name for the open file,
 * /proc/self/fd/N, must be `expected`), and only a regular file, without
 * blocking on a FIFO. Returns the descriptor; `what` names the file in errors.
 */
function openConfined(expected: Buffer, path: string, what: string, size?: number): { fd: number; identity: FileIdentity } {
  let fd: number;
  try {
    fd = openSync(expected, OPEN_FLAGS);
  } catch (e) {
    throw openFailed(e, path, what);
  }
  try {
    let actual: Buffer;
    try {
      actual = readlinkSync(procFd(fd), { encoding: "buffer" });
    } catch (e) {
      throw new StoreProblem(`cannot confirm where the ${what} was opened (/proc/self/fd: ${errnoText(e)})`, path);
    }
    return { fd, identity: checkOpened(actual, fstatSync(fd, { bigint: true }), expected, path, what, size) };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** The path a member must be opened at, as bytes (names may not be UTF-8) and as text for messages. */
function memberLocation(realDir: Buffer, name: Buffer): { expected: Buffer; path: string } {
  const expected = Buffer.concat([realDir, Buffer.from("/"), name]);
  return { expected, path: expected.toString("utf8") };
}

function openFailed(e: unknown, path: string, what = "layer member"): StoreProblem {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === "ELOOP" ? "is a symlink" : code === "ENXIO" ? "is not a regular file" : `cannot be opened (${errnoText(e)})`;
  return new StoreProblem(`${what} ${why}${what === "layer member" ? "; the tar has a regular file there" : ""}`, path);
}

/**
 * The checks on an opened member: the kernel's own name for the open file
 * (/proc/self/fd/N) is the expected path, so no component of it was a
 * symlink (a directory swapped for a link out of the layer makes them
 * differ); a regular file; the tar's size. Returns the file's identity.
 */
function checkOpened(actual: Buffer, st: BigIntStats, expected: Buffer, path: string, what: string, size?: number): FileIdentity {
  if (!actual.equals(expected)) throw new StoreProblem(`${what} resolves outside its place (${actual.toString("utf8")})`, path);
  if (!st.isFile()) throw new StoreProblem(`${what} is not a regular file${what === "layer member" ? "; the tar has one there" : ""}`, path);
  if (size !== undefined && st.size !== BigInt(size)) throw new StoreProblem(`${what} is ${st.size} bytes; the tar's is ${size}`, path);
  return fileIdentity(st);
}

function procFd(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/**
 * A small member, read whole with synchronous calls and checked. Small
 * files are most of a layer's members and their cost is system calls: five
 * of them through the thread pool took ~70 µs a file (the many-small-files
 * case ran at ~55 MB/s), inline they take a few µs. A small read from the
 * page cache does not hold the event loop long, and O_NONBLOCK keeps a FIFO
 * from holding it at all.
 */
function smallMember(realDir: Buffer, name: Buffer, size: number, crc: Buffer, inputs: StreamInputs | undefined): Buffer {
  const { expected, path } = memberLocation(realDir, name);
  const { fd, identity } = openConfined(expected, path, "layer member", size);
  try {
    inputs?.member(identity, path);
    const buffer = Buffer.allocUnsafe(size);
    for (let done = 0; done < size; ) {
      const n = readSync(fd, buffer, done, size - done, done);
      if (n === 0) throw new StoreProblem("the file became shorter while it was read", path);
      done += n;
    }
    // Trusted: the file verified before, unchanged since (checked at open and now) instead of a CRC.
    if (inputs?.trusted) StreamInputs.unchanged(identity, fstatSync(fd, { bigint: true }), path, "layer member");
    else if (!sameCrc(new Crc64().update(buffer), crc)) throw crcMismatch(path, name, "differs");
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** Opens a bigger member with the same checks, through the thread pool. */
async function openMember(realDir: Buffer, name: Buffer, size: number): Promise<{ file: FileHandle; path: string; identity: FileIdentity }> {
  const { expected, path } = memberLocation(realDir, name);
  let file: FileHandle;
  try {
    file = await open(expected, OPEN_FLAGS);
  } catch (e) {
    throw openFailed(e, path);
  }
  try {
    let actual: Buffer;
    try {
      actual = await readlink(procFd(file.fd), { encoding: "buffer" });
    } catch (e) {
      throw new StoreProblem(`cannot confirm where the layer member was opened (/proc/self/fd: ${errnoText(e)})`, path);
    }
    const st = await file.stat({ bigint: true });
    return { file, path, identity: checkOpened(actual, st, expected, path, "layer member", size) };
  } catch (e) {
    await file.close();
    throw e;
  }
}

/**
 * Big members whose CRC was checked, by CRC and file identity (the rule in
 * model/verified-files.ts): a later request reads such a file once, without
 * a CRC. (A user who keeps a writable shared mapping could change bytes
 * without a new ctime; those bytes are their own, never another user's file,
 * and the mirror's sha256 of the layer still fails the download.)
 */
const verifiedMembers = new VerifiedFiles(16384);

function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason ?? new Error("aborted");
}

/**
 * A big member's payload from byte `from`. Unless this very file was checked
 * before, its CRC is checked before the first byte is yielded (a first pass)
 * and again as it is sent, with its identity, so a change under the download
 * fails the stream at the end of the member. Memory stays at one chunk,
 * whatever the file's size.
 */
async function* bigMember(realDir: Buffer, name: Buffer, size: number, crc: Buffer, from: number, signal: AbortSignal, inputs: StreamInputs | undefined): AsyncGenerator<Buffer> {
  const began = nowNs();
  const { file, path, identity } = await openMember(realDir, name, size);
  const what = crc.toString("hex");
  try {
    inputs?.member(identity, path);
    const known = inputs?.trusted === true || verifiedMembers.has(what, identity);
    if (!known) {
      const scratch = Buffer.allocUnsafe(CHUNK_BYTES);
      const first = new Crc64();
      for (let at = 0; at < size; at += CHUNK_BYTES) {
        checkAborted(signal);
        const length = Math.min(CHUNK_BYTES, size - at);
        await readExactly(file, scratch, length, at, path);
        first.update(scratch.subarray(0, length));
      }
      if (!sameCrc(first, crc)) throw crcMismatch(path, name, "differs");
      verifiedMembers.remember(what, identity, began);
    }
    const sending = known ? undefined : new Crc64();
    // The CRC needs every byte; without it, only the part asked for is read. The next chunk is read
    // (in the thread pool) while this one is hashed and sent: reading and hashing one after the other
    // was most of a re-created layer's time (256 MiB: ~80 ms of reads plus ~230 ms of hashing).
    const readChunk = (at: number): Promise<Buffer> => {
      const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, size - at));
      return readExactly(file, chunk, chunk.length, at, path).then(() => chunk);
    };
    let at = sending ? 0 : from - (from % CHUNK_BYTES);
    // READ_AHEAD chunks in flight: the pool's two threads read while this one sends.
    const ahead: Promise<Buffer>[] = [];
    let queued = at;
    const fill = () => {
      while (ahead.length < READ_AHEAD && queued < size) {
        ahead.push(readChunk(queued));
        queued += Math.min(CHUNK_BYTES, size - queued);
      }
    };
    fill();
    try {
      while (ahead.length > 0) {
        checkAborted(signal);
        const chunk = await ahead.shift()!;
        fill();
        const following = at + chunk.length;
        sending?.update(chunk);
        if (following > from) yield at >= from ? chunk : chunk.subarray(from - at);
        at = following;
      }
    } finally {
      // Settled before the file is closed, whatever ended the loop.
      await Promise.allSettled(ahead);
    }
    if ((sending && !sameCrc(sending, crc)) || fileIdentity(await file.stat({ bigint: true })).key !== identity.key) {
      verifiedMembers.forget(what, identity);
      throw crcMismatch(path, name, "changed while it was sent");
    }
  } finally {
    await file.close();
  }
}

/**
 * The re-created tar from byte `start` to the end. `size` is the length the
 * caller announced (from summarizeTarSplit): a tar-split that now says
 * otherwise throws rather than send a different stream.
 */
export async function* assembleLayer(layer: LayerSource, size: number, start: number, signal: AbortSignal, inputs?: StreamInputs): AsyncGenerator<Uint8Array> {
  let realDir: Buffer | undefined;
  const layerDir = async (): Promise<Buffer> => {
    if (realDir) return realDir;
    let real: string;
    try {
      real = await realpath(layer.diffDir);
    } catch (e) {
      throw new StoreProblem(`layer directory cannot be read: ${errnoText(e)}`, layer.diffDir);
    }
    const realRoot = await realpath(layer.storeRoot);
    if (!isInside(realRoot, real)) throw new StoreProblem(`layer directory resolves outside the store (${real})`, layer.diffDir);
    realDir = Buffer.from(real);
    return realDir;
  };
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = (): Buffer => {
    const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending.length = 0;
    pendingBytes = 0;
    return out;
  };
  const tooLong = () => new StoreProblem(`tar-split now describes more than the ${size} bytes announced`, layer.tarSplit);
  let offset = 0;
  for await (const entry of readTarSplit(layer.storeRoot, layer.tarSplit, signal, inputs)) {
    checkAborted(signal);
    const length = entry.type === "segment" ? entry.bytes.length : entry.size;
    const end = offset + length;
    if (end > size) throw tooLong();
    if (length === 0 || end <= start) {
      offset = end;
      continue;
    }
    const from = Math.max(0, start - offset);
    if (entry.type === "segment") {
      pending.push(from === 0 ? entry.bytes : entry.bytes.subarray(from));
      pendingBytes += length - from;
    } else if (entry.size <= SMALL_FILE_BYTES) {
      const bytes = smallMember(await layerDir(), entry.name, entry.size, entry.crc!, inputs);
      pending.push(from === 0 ? bytes : bytes.subarray(from));
      pendingBytes += entry.size - from;
    } else {
      if (pendingBytes > 0) yield flush();
      yield* bigMember(await layerDir(), entry.name, entry.size, entry.crc!, from, signal, inputs);
    }
    if (pendingBytes >= OUTPUT_BYTES) yield flush();
    offset = end;
  }
  if (offset !== size) throw new StoreProblem(`tar-split now describes ${offset} bytes, not the ${size} announced`, layer.tarSplit);
  if (pendingBytes > 0) yield flush();
}

/** The inputs each layer's last whole stream was made from (layer-inputs.ts). */
const layerRecords = new LayerRecords(256);

/**
 * The content body of a re-created layer: its length from the tar-split,
 * its bytes made as they are sent. `onFailure` hears every problem (to log it
 * with the backend and path) before the stream throws to the mirror. Its
 * `verifiedAs` names the inputs of the layer's last whole stream, or of this
 * body's own once it has run whole; opened trusted, it checks them.
 */
export async function layerBody(
  layer: LayerSource,
  sizes: TarSplitSizes,
  signal: AbortSignal,
  onFailure: (e: unknown) => void,
): Promise<ContentBody> {
  const { size } = await sizes.get(layer.storeRoot, layer.tarSplit, signal);
  const place = `${layer.storeRoot}\0${layer.tarSplit}\0${layer.diffDir}`;
  const recorded = layerRecords.get(place);
  let learned: LayerInputs | undefined;
  return {
    mediaType: OCI_LAYER_TAR,
    size,
    verifiedAs() {
      const inputs = learned ?? recorded;
      return inputs && inputsKey(place, inputs);
    },
    async *open(start: number, streamSignal: AbortSignal, trusted?: boolean) {
      // Trusted, the stream checks the inputs `verifiedAs` named; a whole one records what it read.
      const expected = trusted ? recorded : undefined;
      if (trusted && !expected) throw new StoreProblem("opened trusted without inputs recorded", layer.tarSplit);
      const inputs = start === 0 ? new StreamInputs(expected) : undefined;
      try {
        yield* assembleLayer(layer, size, start, streamSignal, inputs);
        const read = inputs?.complete(layer.tarSplit);
        if (read) {
          learned = read;
          layerRecords.set(place, read);
        }
      } catch (e) {
        if (expected && !streamSignal.aborted) layerRecords.forget(place, expected);
        if (!streamSignal.aborted) onFailure(e);
        throw e;
      }
    },
  };
}

/** Whether a path exists as a regular file (a layer's tar-split), without following it out of the store. */
export function hasFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
