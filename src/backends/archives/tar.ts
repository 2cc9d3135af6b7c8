// A tar reader for image archives that never holds a layer in memory. An
// uncompressed tar is read by its 512-byte headers alone (positional reads
// that jump over member data); a gzip tar cannot be seeked, so it is streamed
// through gunzip once and only the small JSON-looking members are kept. Both
// produce the same listing: member names (ustar prefix, PAX path/linkpath/size,
// GNU long names applied), types, sizes and links, which archive.ts resolves
// by hand (skopeo's docker-archive holds `<v1id>/layer.tar -> ../<diffid>.tar`).
import { createReadStream, readSync } from "node:fs";
import { posix } from "node:path";
import { createGunzip } from "node:zlib";
import { MAX_JSON_BYTES, StoreProblem } from "../common/files";

const BLOCK = 512;
/** PAX records and GNU long names are a few hundred bytes; more is not a name. */
const MAX_EXTENDED_HEADER = 1024 * 1024;
/** Everything a gzip pass may keep: the JSON members of even a large multi-image archive fit. */
const MAX_KEPT_BYTES = 64 * 1024 * 1024;
/** Plain tars are read in windows this big, so a small archive costs one or two reads. */
const WINDOW = 64 * 1024;
/** Symlinks followed before a chain is called a loop (Linux's MAXSYMLINKS). */
const MAX_LINKS = 40;

export type MemberType = "file" | "dir" | "symlink" | "hardlink" | "other";

export interface TarMember {
  /** Normalized: no leading `./` or `/`, no trailing `/`. */
  name: string;
  type: MemberType;
  size: number;
  /** Symlink target as written; hardlink target as an archive path. */
  linkName?: string;
  /** Where the member's data starts in the uncompressed tar stream. */
  offset: number;
  /** A regular member whose data starts with the gzip magic (a docker-archive layer kept compressed). */
  gzip?: boolean;
  /**
   * A gzip member's trailer ISIZE: its decompressed length modulo 2^32, exact
   * for one gzip stream under 4 GiB (what docker, skopeo and pigz write).
   */
  isize?: number;
}

/** The smallest gzip stream: a 10-byte header and an 8-byte trailer (CRC32, ISIZE). */
const GZIP_MIN = 18;

/** Whether bytes start with the gzip magic. */
export function isGzipMagic(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
}

/** A tar's listing, and the bytes of its (small) regular members. */
export interface TarContents {
  /** By normalized name; a later member of the same name replaces an earlier one, as tar extraction does. */
  members: Map<string, TarMember>;
  /** The bytes of a regular member of at most `maxBytes`; throws StoreProblem. */
  read(member: TarMember, maxBytes?: number): Buffer;
}

interface Header {
  name: string;
  typeflag: string;
  size: number;
  linkName: string;
}

/** Extended headers ('x', 'L', 'K') waiting for the member they describe. */
interface Pending {
  pax: Record<string, string>;
  longName?: string;
  longLink?: string;
}

/** `./a//b/` → `a/b`; a name that climbs out (`../x`) stays visibly outside. */
export function normalizeMemberName(name: string): string {
  const n = posix.normalize(name.replace(/^\/+/, ""));
  return n === "." ? "" : n.replace(/\/+$/, "");
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? length : nul).toString("utf8");
}

function numeric(block: Buffer, start: number, length: number, what: string): number {
  const field = block.subarray(start, start + length);
  // GNU base-256 for sizes of 8 GiB and more: high bit set, big-endian after it.
  if (field[0]! & 0x80) {
    let n = field[0]! & 0x7f;
    for (let i = 1; i < length; i++) n = n * 256 + field[i]!;
    if (!Number.isSafeInteger(n)) throw new Error(`${what} too large`);
    return n;
  }
  const text = cString(block, start, length).replace(/ +$/, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new Error(`${what} is not octal`);
  return parseInt(text, 8);
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Parses and checks one header block; throws StoreProblem (at `path`) for anything that is not one. */
function parseHeader(block: Buffer, path: string, offset: number): Header {
  try {
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    if (numeric(block, 148, 8, "checksum") !== sum) throw new Error("bad header checksum");
    const magic = block.subarray(257, 263).toString("latin1");
    let name = cString(block, 0, 100);
    // POSIX ustar (not the old GNU "ustar  " magic, whose prefix area holds times) splits long names.
    const prefix = magic === "ustar\0" ? cString(block, 345, 155) : "";
    if (prefix) name = `${prefix}/${name}`;
    return { name, typeflag: String.fromCharCode(block[156]!), size: numeric(block, 124, 12, "size"), linkName: cString(block, 157, 100) };
  } catch (e) {
    throw new StoreProblem(`not a tar archive (at byte ${offset}: ${(e as Error).message})`, path);
  }
}

/** PAX extended header records: `<len> <key>=<value>\n`. */
function parsePax(data: Buffer, into: Record<string, string>): void {
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) return;
    const len = parseInt(data.subarray(pos, space).toString("latin1"), 10);
    if (!(len > 0) || pos + len > data.length) return;
    const record = data.subarray(space + 1, pos + len - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) into[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
}

function memberType(typeflag: string): MemberType {
  switch (typeflag) {
    case "0":
    case "\0":
    case "7":
      return "file";
    case "1":
      return "hardlink";
    case "2":
      return "symlink";
    case "5":
      return "dir";
    default:
      return "other";
  }
}

/** Links and directories carry no data whatever their size field says (a hardlink may repeat its target's). */
function carriesData(type: MemberType): boolean {
  return type !== "hardlink" && type !== "symlink" && type !== "dir";
}

/** Whether a header's data is an extended header for the next member rather than a member. */
function isExtended(typeflag: string): boolean {
  return typeflag === "x" || typeflag === "L" || typeflag === "K" || typeflag === "g";
}

/** Builds the listing from headers in order, applying extended headers to the member after them. */
class Listing {
  readonly members = new Map<string, TarMember>();
  private pending: Pending = { pax: {} };

  extended(h: Header, data: Buffer): void {
    const text = () => cString(data, 0, data.length);
    if (h.typeflag === "x") parsePax(data, this.pending.pax);
    else if (h.typeflag === "L") this.pending.longName = text();
    else if (h.typeflag === "K") this.pending.longLink = text();
    // 'g' (global PAX) carries nothing an image reader needs.
  }

  /** Adds a member, its name and size corrected by the extended headers before it. */
  member(h: Header, offset: number): TarMember {
    const { pax, longName, longLink } = this.pending;
    this.pending = { pax: {} };
    const size = pax.size !== undefined && /^\d+$/.test(pax.size) ? Number(pax.size) : h.size;
    const type = memberType(h.typeflag);
    const rawLink = pax.linkpath ?? longLink ?? h.linkName;
    const m: TarMember = {
      name: normalizeMemberName(pax.path ?? longName ?? h.name),
      type,
      size,
      offset,
      linkName: type === "hardlink" ? normalizeMemberName(rawLink) : type === "symlink" ? rawLink : undefined,
    };
    this.members.set(m.name, m);
    return m;
  }
}

const padded = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

/** Positional reads through a window, so consecutive small headers and members cost one read. */
class WindowReader {
  private start = 0;
  private bytes = Buffer.alloc(0);
  constructor(
    private readonly fd: number,
    private readonly fileSize: number,
  ) {}

  read(pos: number, length: number): Buffer {
    if (pos < this.start || pos + length > this.start + this.bytes.length) {
      const want = Math.min(Math.max(length, WINDOW), this.fileSize - pos);
      const buf = Buffer.allocUnsafe(want);
      const got = readSync(this.fd, buf, 0, want, pos);
      this.start = pos;
      this.bytes = buf.subarray(0, got);
      if (got < length) throw new Error("short read");
    }
    return this.bytes.subarray(pos - this.start, pos - this.start + length);
  }
}

/**
 * Lists an uncompressed tar from its headers (member data is skipped over,
 * never read) and reads members on demand. `path` names the tarball in problems.
 */
export function scanPlainTar(fd: number, fileSize: number, path: string): TarContents {
  const reader = new WindowReader(fd, fileSize);
  const listing = new Listing();
  const truncated = () => new StoreProblem("truncated tar (ends inside a member or before the end-of-archive blocks)", path);
  let pos = 0;
  for (;;) {
    if (pos + BLOCK > fileSize) throw truncated();
    const block = reader.read(pos, BLOCK);
    if (isZeroBlock(block)) break;
    const h = parseHeader(block, path, pos);
    const dataStart = pos + BLOCK;
    let size = h.size;
    if (isExtended(h.typeflag)) {
      if (size > MAX_EXTENDED_HEADER) throw new StoreProblem(`extended header of ${size} bytes at byte ${pos}`, path);
      if (dataStart + size > fileSize) throw truncated();
      listing.extended(h, Buffer.from(reader.read(dataStart, size)));
    } else {
      const m = listing.member(h, dataStart);
      size = carriesData(m.type) ? m.size : 0;
      // The window that held the header holds the data's first bytes too: no extra read. The
      // trailer is read where the next header is, so a window there costs nothing either.
      if (m.type === "file" && size >= GZIP_MIN && dataStart + size <= fileSize) {
        m.gzip = isGzipMagic(reader.read(dataStart, 2));
        if (m.gzip) m.isize = reader.read(dataStart + size - 4, 4).readUInt32LE(0);
      }
    }
    if (dataStart + size > fileSize) throw truncated();
    pos = dataStart + padded(size);
  }
  return {
    members: listing.members,
    read(member, maxBytes = MAX_JSON_BYTES) {
      if (member.size > maxBytes) throw new StoreProblem(`${member.name}: larger than ${maxBytes} bytes`, path);
      return Buffer.from(reader.read(member.offset, member.size));
    },
  };
}

/** The first byte of a JSON document (after optional whitespace). */
function looksLikeJson(first: number): boolean {
  return first === 0x7b || first === 0x5b || first === 0x20 || first === 0x0a || first === 0x0d || first === 0x09;
}

/**
 * A push parser over the decompressed stream: headers are parsed as they
 * pass; a member's bytes are kept only when it may be JSON (its first byte
 * says so) and is no larger than MAX_JSON_BYTES, so memory stays bounded
 * whatever the layers weigh.
 */
class StreamingTar {
  readonly listing = new Listing();
  readonly kept = new Map<number, Buffer>();
  ended = false;
  private pos = 0;
  private headerBuf = Buffer.alloc(0);
  /** The member (or extended header) whose data is passing. */
  private current?: {
    header: Header;
    offset: number;
    remaining: number;
    padding: number;
    chunks?: Buffer[];
    decided: boolean;
    /** A regular member that may be gzip: its first bytes (TarMember.gzip) and last four (TarMember.isize) are noted. */
    member?: TarMember;
    head?: Buffer;
    tail?: Buffer;
  };
  private keptBytes = 0;

  constructor(private readonly path: string) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.ended) {
      if (this.current) at = this.data(chunk, at);
      else at = this.header(chunk, at);
    }
  }

  private header(chunk: Buffer, at: number): number {
    const take = Math.min(BLOCK - this.headerBuf.length, chunk.length - at);
    this.headerBuf = Buffer.concat([this.headerBuf, chunk.subarray(at, at + take)]);
    if (this.headerBuf.length < BLOCK) return at + take;
    const block = this.headerBuf;
    this.headerBuf = Buffer.alloc(0);
    const offset = this.pos;
    this.pos += BLOCK;
    if (isZeroBlock(block)) {
      this.ended = true;
      return at + take;
    }
    const h = parseHeader(block, this.path, offset);
    let size = h.size;
    let chunks: Buffer[] | undefined;
    let member: TarMember | undefined;
    if (isExtended(h.typeflag)) {
      if (size > MAX_EXTENDED_HEADER) throw new StoreProblem(`extended header of ${size} bytes at byte ${offset}`, this.path);
      chunks = [];
    } else {
      const m = this.listing.member(h, this.pos);
      size = carriesData(m.type) ? m.size : 0;
      if (m.type === "file" && size <= MAX_JSON_BYTES) chunks = [];
      if (m.type === "file" && size >= GZIP_MIN) member = m;
    }
    this.current = { header: h, offset: this.pos, remaining: size, padding: padded(size) - size, chunks, decided: isExtended(h.typeflag), member };
    if (size === 0) this.finishMember();
    return at + take;
  }

  private data(chunk: Buffer, at: number): number {
    const cur = this.current!;
    if (cur.remaining > 0) {
      const piece = chunk.subarray(at, at + Math.min(cur.remaining, chunk.length - at));
      if (cur.chunks && !cur.decided) {
        cur.decided = true;
        if (!looksLikeJson(piece[0]!)) cur.chunks = undefined;
      }
      if (cur.chunks) cur.chunks.push(Buffer.from(piece));
      if (cur.member) sniffGzip(cur, piece);
      cur.remaining -= piece.length;
      this.pos += piece.length;
      at += piece.length;
      if (cur.remaining === 0) this.finishMember();
      return at;
    }
    const skip = Math.min(cur.padding, chunk.length - at);
    cur.padding -= skip;
    this.pos += skip;
    if (cur.padding === 0) this.current = undefined;
    return at + skip;
  }

  private finishMember(): void {
    const cur = this.current!;
    if (cur.member?.gzip && cur.tail?.length === 4) cur.member.isize = cur.tail.readUInt32LE(0);
    if (cur.chunks) {
      const bytes = Buffer.concat(cur.chunks);
      if (isExtended(cur.header.typeflag)) this.listing.extended(cur.header, bytes);
      else {
        this.keptBytes += bytes.length;
        if (this.keptBytes > MAX_KEPT_BYTES) throw new StoreProblem(`more than ${MAX_KEPT_BYTES} bytes of JSON-looking members`, this.path);
        this.kept.set(cur.offset, bytes);
      }
    }
    if (cur.padding === 0) this.current = undefined;
  }
}

/** Notes a passing piece of a member that may be gzip: its first two bytes and, when it is, its last four (any piece may be as short as one byte). */
function sniffGzip(cur: { member?: TarMember; head?: Buffer; tail?: Buffer }, piece: Buffer): void {
  const m = cur.member!;
  if (m.gzip === undefined) {
    cur.head = cur.head ? Buffer.concat([cur.head, piece.subarray(0, 2 - cur.head.length)]) : Buffer.from(piece.subarray(0, 2));
    if (cur.head.length < 2) return;
    m.gzip = isGzipMagic(cur.head);
    if (!m.gzip) {
      cur.member = undefined;
      return;
    }
  }
  cur.tail = piece.length >= 4 ? Buffer.from(piece.subarray(-4)) : Buffer.concat([cur.tail ?? Buffer.alloc(0), piece]).subarray(-4);
}

/**
 * Lists a gzip-compressed tar in one streaming pass, keeping only small
 * JSON-looking members. `path` names the tarball in problems. The pass is
 * not cut short by a call timeout: finishing it (and caching the result) is
 * what lets the next call make progress.
 */
export async function scanGzipTar(path: string, realPath: string): Promise<TarContents> {
  const parser = new StreamingTar(path);
  const input = createReadStream(realPath, { highWaterMark: 256 * 1024 });
  const gunzip = createGunzip();
  // pipe() does not pass a read error on; without this the loop below would wait forever.
  input.on("error", (e) => gunzip.destroy(e));
  input.pipe(gunzip);
  try {
    for await (const chunk of gunzip) {
      parser.push(chunk as Buffer);
      if (parser.ended) break;
    }
  } catch (e) {
    if (e instanceof StoreProblem) throw e;
    throw new StoreProblem(`not a readable gzip tar: ${(e as Error).message}`, path);
  } finally {
    input.unpipe(gunzip);
    input.destroy();
    gunzip.destroy();
  }
  if (!parser.ended) throw new StoreProblem("truncated tar (ends inside a member or before the end-of-archive blocks)", path);
  return {
    members: parser.listing.members,
    read(member, maxBytes = MAX_JSON_BYTES) {
      if (member.size > maxBytes) throw new StoreProblem(`${member.name}: larger than ${maxBytes} bytes`, path);
      const bytes = parser.kept.get(member.offset);
      // Only members that are not JSON (layers) were let pass unkept.
      if (!bytes) throw new StoreProblem(`${member.name}: not a JSON document`, path);
      return bytes;
    },
  };
}

/**
 * The regular member a name leads to inside the archive, following symlinks
 * (relative to the link's directory) and hardlinks (archive paths). A link
 * that leaves the archive or loops is refused.
 */
export function resolveMember(contents: TarContents, name: string, path: string): TarMember {
  let current = normalizeMemberName(name);
  for (let hops = 0; hops <= MAX_LINKS; hops++) {
    if (current === ".." || current.startsWith("../") || current === "") {
      throw new StoreProblem(`${name}: resolves outside the archive`, path);
    }
    const m = contents.members.get(current);
    if (!m) throw new StoreProblem(`${name}: no such member${current !== name ? ` (${current})` : ""}`, path);
    if (m.type === "file") return m;
    if (m.type === "hardlink") current = m.linkName!;
    else if (m.type === "symlink") {
      if (m.linkName!.startsWith("/")) throw new StoreProblem(`${name}: symlink to ${m.linkName} leaves the archive`, path);
      current = normalizeMemberName(posix.join(posix.dirname(m.name), m.linkName!));
    } else throw new StoreProblem(`${name}: not a regular file`, path);
  }
  throw new StoreProblem(`${name}: symlinks loop (more than ${MAX_LINKS})`, path);
}
