// A small read-only reader of bbolt files (go.etcd.io/bbolt), the database
// containerd keeps its metadata in (io.containerd.metadata.v1.bolt/meta.db).
//
// Why hand-written: there is no bbolt reader on npm (`npm view bbolt` and
// `npm view boltdb` are 404; the package lists hold none), and the Go library
// cannot even open the file while containerd runs, since containerd holds an
// exclusive flock on it. What is needed is small: the on-disk format from
// etcd-io/bbolt internal/common/{page,meta}.go, bucket.go and db.go, read
// with positional reads of the file and no lock.
//
// The format, as read here:
// - pages of `pageSize` bytes; page N starts at N * pageSize and spans
//   1 + `overflow` pages. A page starts with a 16-byte header
//   {id u64, flags u16, count u16, overflow u32}, little-endian.
// - pages 0 and 1 are meta pages: after the header, {magic u32 (0xED0CDAED),
//   version u32 (2), pageSize u32, flags u32, root bucket {root u64,
//   sequence u64}, freelist u64, pgid u64 (high-water mark), txid u64,
//   checksum u64}. The checksum is FNV-64a of the 56 bytes before it. A
//   commit writes its data pages first and then the meta page txid % 2, so
//   the valid meta with the highest txid is the last commit.
// - branch pages (flags 0x01) hold `count` elements {pos u32, ksize u32,
//   pgid u64}; leaf pages (0x02) hold {flags u32, pos u32, ksize u32, vsize
//   u32}. `pos` is relative to the element itself. Keys are sorted.
// - a leaf element with flag 0x01 is a nested bucket: its value is the bucket
//   header {root u64, sequence u64}; root 0 means an inline bucket, whose
//   leaf page follows the header inside the value.
//
// Consistency without the lock: bbolt never writes over the pages of the
// last committed tree. A commit writes new pages into space freed by earlier
// commits, then its meta page, so the tree a meta page names stays intact
// until the commit after the next one. A snapshot read (readSnapshot) takes
// the best meta, reads the tree, and reads the metas again: if the best meta
// is still the same commit, nothing the read saw can have been overwritten.
// If it changed, or a page did not parse while it changed, the read starts
// again; a page that does not parse under an unchanged meta is corruption.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

export const BOLT_MAGIC = 0xed0cdaed;
export const BOLT_VERSION = 2;
const PAGE_HEADER = 16;
const ELEMENT_SIZE = 16;
const META_CHECKSUMMED = 56;
const BRANCH_PAGE = 0x01;
const LEAF_PAGE = 0x02;
const META_PAGE = 0x04;
const BUCKET_LEAF = 0x01;
const BUCKET_HEADER = 16;
/** bbolt's own page sizes are the OS page size; it probes 1 KiB to 16 MiB for the second meta (db.go getPageSizeFromSecondMeta). */
const MIN_PAGE_SIZE = 1024;
const MAX_PAGE_SIZE = 16 * 1024 * 1024;
/** B+tree depth: a real tree of 2^64 keys is far shallower than this. */
const MAX_DEPTH = 64;
/**
 * The most one page with its overflow may span. bbolt itself allows values up
 * to 2 GiB, but nothing this reader walks comes near: containerd's records
 * are small (labels.Validate caps a label at 4 KiB, key and value together).
 * Without a bound, one damaged overflow count in a large meta.db would have
 * the reader allocate as much as the file holds.
 */
const MAX_PAGE_RUN = 64 * 1024 * 1024;
/** Snapshot attempts before giving up on a file that keeps changing (the caller keeps its last good answer). */
const DEFAULT_ATTEMPTS = 5;
/** Page reads between looks at the meta pages during one snapshot read (two 80-byte reads each). */
const RECHECK_PAGES = 512;

/** Why a file could not be read as bbolt. `kind` decides what the caller does. */
export class BoltError extends Error {
  constructor(
    readonly kind: "not-bbolt" | "unsupported" | "corrupt" | "changing",
    message: string,
  ) {
    super(message);
    this.name = "BoltError";
  }
}

export interface BoltMeta {
  /** Which meta page (0 or 1) this came from. */
  slot: number;
  pageSize: number;
  flags: number;
  rootPage: number;
  freelist: bigint;
  /** The high-water mark: every page of the tree is below it. */
  highWater: number;
  txid: bigint;
  checksum: bigint;
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const U64 = (1n << 64n) - 1n;

/** FNV-64a (Go hash/fnv New64a), what bbolt checksums its meta pages with. */
export function fnv64a(bytes: Uint8Array): bigint {
  let h = FNV_OFFSET;
  for (const b of bytes) h = ((h ^ BigInt(b)) * FNV_PRIME) & U64;
  return h;
}

/** A u64 page id as a number, without a BigInt (the hot path reads one per page and per nested bucket). */
function readPageId(buf: Buffer, offset: number, what: () => string): number {
  const high = buf.readUInt32LE(offset + 4);
  if (high > 0x1fffff) throw new BoltError("corrupt", `${what()} is out of range`);
  return high * 0x100000000 + buf.readUInt32LE(offset);
}

function safeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BoltError("corrupt", `${what} ${v} is out of range`);
  return Number(v);
}

/**
 * Parses one meta page (header included) from `buf` at `offset`. Returns why
 * it is not valid instead of throwing: one bad meta page is normal (a torn
 * write of the commit in progress), only both bad is an error.
 */
export function parseMeta(buf: Buffer, offset: number, slot: number): BoltMeta | { invalid: "no-magic" | "version" | "checksum" | "short"; version?: number } {
  if (buf.length < offset + PAGE_HEADER + 64) return { invalid: "short" };
  const m = offset + PAGE_HEADER;
  if (buf.readUInt32LE(m) !== BOLT_MAGIC) return { invalid: "no-magic" };
  const version = buf.readUInt32LE(m + 4);
  if (version !== BOLT_VERSION) return { invalid: "version", version };
  const checksum = buf.readBigUInt64LE(m + META_CHECKSUMMED);
  if (fnv64a(buf.subarray(m, m + META_CHECKSUMMED)) !== checksum) return { invalid: "checksum" };
  if ((buf.readUInt16LE(offset + 8) & META_PAGE) === 0) return { invalid: "checksum" };
  const pageSize = buf.readUInt32LE(m + 8);
  return {
    slot,
    pageSize,
    flags: buf.readUInt32LE(m + 12),
    rootPage: safeNumber(buf.readBigUInt64LE(m + 16), "root page"),
    freelist: buf.readBigUInt64LE(m + 32),
    highWater: safeNumber(buf.readBigUInt64LE(m + 40), "high-water mark"),
    txid: buf.readBigUInt64LE(m + 48),
    checksum,
  };
}

function isMeta(v: ReturnType<typeof parseMeta>): v is BoltMeta {
  return !("invalid" in v);
}

function preadExact(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? buf : buf.subarray(0, done);
}

/**
 * The meta page of the last commit: the valid one (magic, version, checksum)
 * with the highest txid, as bbolt's DB.meta() picks it. Throws BoltError
 * "not-bbolt" when neither page has bbolt's magic.
 */
export function readMeta(fd: number, fileSize: number): BoltMeta {
  if (fileSize < PAGE_HEADER + 64) throw new BoltError("not-bbolt", `${fileSize} bytes is too short for a bbolt file`);
  const head = preadExact(fd, Math.min(fileSize, 4096), 0);
  const first = parseMeta(head, 0, 0);
  const candidates: BoltMeta[] = [];
  const seen: ReturnType<typeof parseMeta>[] = [first];
  let pageSize: number | undefined;
  if (isMeta(first)) {
    candidates.push(first);
    pageSize = first.pageSize;
  }
  // Without a valid first meta the page size is unknown: probe where the second could be, as bbolt does.
  const sizes = pageSize !== undefined ? [pageSize] : Array.from({ length: 15 }, (_, i) => MIN_PAGE_SIZE << i);
  for (const size of sizes) {
    if (size < MIN_PAGE_SIZE || size > MAX_PAGE_SIZE || (size & (size - 1)) !== 0) break;
    if (size + PAGE_HEADER + 64 > fileSize) break;
    const second = parseMeta(preadExact(fd, PAGE_HEADER + 64, size), 0, 1);
    seen.push(second);
    if (isMeta(second) && (pageSize === undefined || second.pageSize === pageSize)) {
      candidates.push(second);
      break;
    }
  }
  const valid = candidates.filter((m) => m.pageSize >= MIN_PAGE_SIZE && m.pageSize <= MAX_PAGE_SIZE && (m.pageSize & (m.pageSize - 1)) === 0);
  if (valid.length === 0) {
    const problems = seen.filter((s): s is { invalid: "no-magic" | "version" | "checksum" | "short"; version?: number } => !isMeta(s));
    if (problems.every((p) => p.invalid === "no-magic" || p.invalid === "short")) throw new BoltError("not-bbolt", "no bbolt meta page (magic 0xED0CDAED not found)");
    const version = problems.find((p) => p.invalid === "version");
    if (version && !problems.some((p) => p.invalid === "checksum")) {
      throw new BoltError("unsupported", `bbolt file format version ${version.version} (this reader knows ${BOLT_VERSION})`);
    }
    throw new BoltError("corrupt", "both bbolt meta pages are invalid (checksum or page size)");
  }
  return valid.reduce((a, b) => (b.txid > a.txid ? b : a));
}

/** A page as read: its bytes (header included, overflow pages appended) and header fields. */
interface Page {
  buf: Buffer;
  flags: number;
  count: number;
}

function pageAt(buf: Buffer, what: () => string): Page {
  if (buf.length < PAGE_HEADER) throw new BoltError("corrupt", `${what()}: shorter than a page header`);
  return { buf, flags: buf.readUInt16LE(8), count: buf.readUInt16LE(10) };
}

export type BoltValue = Buffer | BoltBucket;

/**
 * One read of the tree a meta page names. A page must carry its own id and
 * lie below the high-water mark and inside the file; within one walk of a
 * bucket a page is read at most once (a second visit is a loop: bbolt gives
 * each page one parent); and the whole snapshot reads at most a few times as
 * many pages as the file has. So a damaged file cannot make the reader loop,
 * or read out of range.
 */
export class BoltSnapshot {
  private reads = 0;
  private readonly budget: number;

  constructor(
    private readonly fd: number,
    private fileSize: number,
    readonly meta: BoltMeta,
  ) {
    // Of the file's pages, not the meta's high-water mark alone: a damaged mark (checksum intact) past
    // the file would lift the bound on shared pages to nothing.
    this.budget = 4 * Math.min(meta.highWater, Math.floor(fileSize / meta.pageSize)) + 64;
  }

  /**
   * Whether `end` is inside the file. The size is looked at again before saying
   * no: bbolt grows the file and writes the new pages before the meta page
   * that names them, so a size taken before the meta was read can be short
   * of a commit that landed in between, without anything being wrong.
   */
  private inFile(end: number): boolean {
    if (end <= this.fileSize) return true;
    this.fileSize = fstatSync(this.fd).size;
    return end <= this.fileSize;
  }

  /** The root bucket (the one that holds the top-level buckets). */
  root(): BoltBucket {
    return new BoltBucket(this, this.meta.rootPage, undefined);
  }

  /**
   * Reads page `id` (with its overflow pages) for `owner` (named in errors,
   * made only then) during a walk that has seen `visited`.
   */
  readPage(id: number, owner: { readonly path: string }, visited: Set<number>): Page {
    const { pageSize, highWater } = this.meta;
    const what = () => `bucket ${owner.path}`;
    if (id < 2 || id >= highWater) throw new BoltError("corrupt", `${what()}: page ${id} is out of range (high-water mark ${highWater})`);
    if (++this.reads > this.budget) throw new BoltError("corrupt", `${what()}: more page reads than the file has pages (pages shared between buckets)`);
    // A long read under a busy writer stops as soon as a new commit shows, rather than at its end.
    if (this.reads % RECHECK_PAGES === 0 && !sameCommit(this.fd, this.meta)) throw new BoltError("changing", "a commit landed during the read");
    if (visited.has(id)) throw new BoltError("corrupt", `${what()}: page ${id} is reached twice (a page loop)`);
    visited.add(id);
    const position = id * pageSize;
    if (!this.inFile(position + pageSize)) throw new BoltError("corrupt", `${what()}: page ${id} is past the end of the file (truncated?)`);
    // One read per page: reading 16 pages at once was three times slower on a root of 10,000 images
    // (the records of one import do not lie together), measured.
    let buf = preadExact(this.fd, pageSize, position);
    if (buf.length < pageSize) throw new BoltError("corrupt", `${what()}: page ${id} is past the end of the file (truncated?)`);
    const headerId = buf.readUInt32LE(4) * 0x100000000 + buf.readUInt32LE(0);
    if (headerId !== id) throw new BoltError("corrupt", `${what()}: page ${id} says it is page ${headerId}`);
    const overflow = buf.readUInt32LE(12);
    if (overflow > 0) {
      if (id + overflow >= highWater) throw new BoltError("corrupt", `${what()}: page ${id} overflows past the high-water mark`);
      const total = (1 + overflow) * pageSize;
      if (total > MAX_PAGE_RUN) throw new BoltError("corrupt", `${what()}: page ${id} spans ${total} bytes with its overflow (at most ${MAX_PAGE_RUN} are read)`);
      if (!this.inFile(position + total)) throw new BoltError("corrupt", `${what()}: page ${id} overflows past the end of the file`);
      for (let i = 1; i <= overflow; i++) {
        if (visited.has(id + i)) throw new BoltError("corrupt", `${what()}: page ${id + i} is reached twice (a page loop)`);
        visited.add(id + i);
      }
      buf = preadExact(this.fd, total, position);
      if (buf.length < total) throw new BoltError("corrupt", `${what()}: page ${id} is past the end of the file (truncated?)`);
    }
    return { buf, flags: buf.readUInt16LE(8), count: buf.readUInt16LE(10) };
  }
}

/** A bucket of one snapshot: an on-disk tree, or an inline leaf page held in its parent's value. */
export class BoltBucket {
  constructor(
    private readonly snap: BoltSnapshot,
    private readonly rootPage: number,
    private readonly inline: Buffer | undefined,
    /** Parent and key, for the path in messages (made only when one is needed: there are many buckets). */
    private readonly parent?: BoltBucket,
    private readonly key?: Buffer,
  ) {}

  /** The bucket's path from the root, for messages. */
  get path(): string {
    if (!this.parent || !this.key) return "/";
    const up = this.parent.path;
    return `${up === "/" ? "" : up}/${this.key.toString("utf8")}`;
  }

  /** Calls `fn` for every key in order; the value is the bytes, or a bucket for a nested bucket. */
  forEach(fn: (key: Buffer, value: BoltValue) => void): void {
    if (this.inline) {
      this.leaf(pageAt(this.inline, () => `inline bucket ${this.path}`), fn);
      return;
    }
    this.walk(this.rootPage, 0, new Set(), fn);
  }

  /** Every entry, as a map from key (utf8) to value. */
  entries(): Map<string, BoltValue> {
    const out = new Map<string, BoltValue>();
    this.forEach((k, v) => out.set(k.toString("utf8"), v));
    return out;
  }

  /** The nested bucket `name`, if there is one (a plain value of that name is not a bucket). */
  bucket(name: string): BoltBucket | undefined {
    let found: BoltBucket | undefined;
    // Buckets on the way to the images are small (v1 has a key per namespace); a full scan of them is cheap.
    this.forEach((k, v) => {
      if (found === undefined && v instanceof BoltBucket && k.toString("utf8") === name) found = v;
    });
    return found;
  }

  private walk(id: number, depth: number, visited: Set<number>, fn: (key: Buffer, value: BoltValue) => void): void {
    if (depth > MAX_DEPTH) throw new BoltError("corrupt", `bucket ${this.path}: tree deeper than ${MAX_DEPTH}`);
    const page = this.snap.readPage(id, this, visited);
    if (page.flags === LEAF_PAGE) {
      this.leaf(page, fn);
      return;
    }
    if (page.flags !== BRANCH_PAGE) throw new BoltError("corrupt", `bucket ${this.path}: page ${id} is neither a branch nor a leaf (flags 0x${page.flags.toString(16)})`);
    const { buf, count } = page;
    if (PAGE_HEADER + count * ELEMENT_SIZE > buf.length) throw new BoltError("corrupt", `bucket ${this.path}: page ${id} has more elements than fit`);
    for (let i = 0; i < count; i++) {
      const e = PAGE_HEADER + i * ELEMENT_SIZE;
      const child = readPageId(buf, e + 8, () => `bucket ${this.path}: child page`);
      this.walk(child, depth + 1, visited, fn);
    }
  }

  private leaf(page: Page, fn: (key: Buffer, value: BoltValue) => void): void {
    const { buf, count } = page;
    if (page.flags !== LEAF_PAGE) throw new BoltError("corrupt", `bucket ${this.path}: expected a leaf page (flags 0x${page.flags.toString(16)})`);
    if (PAGE_HEADER + count * ELEMENT_SIZE > buf.length) throw new BoltError("corrupt", `bucket ${this.path}: leaf has more elements than fit`);
    for (let i = 0; i < count; i++) {
      const e = PAGE_HEADER + i * ELEMENT_SIZE;
      const flags = buf.readUInt32LE(e);
      const pos = buf.readUInt32LE(e + 4);
      const ksize = buf.readUInt32LE(e + 8);
      const vsize = buf.readUInt32LE(e + 12);
      const start = e + pos;
      if (start + ksize + vsize > buf.length) throw new BoltError("corrupt", `bucket ${this.path}: element ${i} lies outside its page`);
      const key = buf.subarray(start, start + ksize);
      const value = buf.subarray(start + ksize, start + ksize + vsize);
      if ((flags & BUCKET_LEAF) === 0) {
        fn(key, value);
        continue;
      }
      if (value.length < BUCKET_HEADER) throw new BoltError("corrupt", `bucket ${this.path}: nested bucket ${JSON.stringify(key.toString("utf8"))} has a short header`);
      const root = readPageId(value, 0, () => `bucket ${this.path}: nested bucket root page`);
      const child = new BoltBucket(this.snap, root, root === 0 ? value.subarray(BUCKET_HEADER) : undefined, this, key);
      fn(key, child);
    }
  }
}

/**
 * Reads a consistent snapshot of a bbolt file: `read` runs against the tree
 * of the last commit, and its result is returned only if that commit was
 * still the last one when it finished (see the top of this file). `read`
 * must not keep the buffers it is given beyond the call (they are views of
 * pages) except by copying. Throws BoltError: "not-bbolt", "unsupported",
 * "corrupt" (a page that does not parse while the file stood still), or
 * "changing" (a new commit during every one of `attempts` reads).
 */
export function readSnapshot<T>(path: string, read: (root: BoltBucket, snap: BoltSnapshot) => T, attempts = DEFAULT_ATTEMPTS): { value: T; meta: BoltMeta } {
  const fd = openSync(path, "r");
  try {
    for (let attempt = 0; attempt < attempts; attempt++) {
      const meta = readMeta(fd, fstatSync(fd).size);
      // The size after the meta: the file holds every page of that commit by then (see inFile).
      const snap = new BoltSnapshot(fd, fstatSync(fd).size, meta);
      let value: T;
      try {
        value = read(snap.root(), snap);
      } catch (e) {
        // Anything `read` makes of a tree that changed under it (a bad page, a
        // bucket that seems missing) is retried; under an unchanged commit it is the file's.
        if (sameCommit(fd, meta)) throw e;
        continue;
      }
      if (sameCommit(fd, meta)) return { value, meta };
    }
  } finally {
    closeSync(fd);
  }
  throw new BoltError("changing", `a new commit landed during each of ${attempts} reads`);
}

/** Whether the last commit is still the one `meta` describes. */
function sameCommit(fd: number, meta: BoltMeta): boolean {
  let now: BoltMeta;
  try {
    now = readMeta(fd, fstatSync(fd).size);
  } catch {
    return false;
  }
  return now.txid === meta.txid && now.checksum === meta.checksum && now.slot === meta.slot;
}

/** Go encoding/binary Varint (zigzag), how containerd stores sizes and the schema version. */
export function readVarint(buf: Buffer): number | undefined {
  // Sizes of a few bytes are the common case: plain numbers while they stay exact.
  let ux = 0;
  let mul = 1;
  for (let i = 0; i < buf.length && i < 7; i++) {
    const b = buf[i]!;
    ux += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) {
      if (i !== buf.length - 1) return undefined;
      return ux % 2 === 0 ? ux / 2 : -(ux + 1) / 2;
    }
    mul *= 128;
  }
  let x = 0n;
  let shift = 0n;
  for (let i = 0; i < buf.length && i < 10; i++) {
    const b = BigInt(buf[i]!);
    x |= (b & 0x7fn) << shift;
    if ((b & 0x80n) === 0n) {
      if (i !== buf.length - 1) return undefined;
      const signed = (x >> 1n) ^ -(x & 1n);
      return signed >= BigInt(Number.MIN_SAFE_INTEGER) && signed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(signed) : undefined;
    }
    shift += 7n;
  }
  return undefined;
}

/**
 * Go time.Time MarshalBinary (versions 1 and 2), how containerd stores
 * createdat/updatedat: version byte, seconds since year 1 (i64 BE),
 * nanoseconds (i32 BE), zone offset in minutes (i16 BE; version 2 adds
 * seconds). Returns an RFC 3339 UTC string, or undefined for other bytes.
 */
export function readGoTime(buf: Buffer): string | undefined {
  if (buf.length < 15 || (buf[0] !== 1 && buf[0] !== 2)) return undefined;
  if (buf[0] === 1 && buf.length !== 15) return undefined;
  if (buf[0] === 2 && buf.length !== 16) return undefined;
  // Seconds from 0001-01-01 to 1970-01-01.
  const unixToInternal = 62135596800n;
  const sec = buf.readBigInt64BE(1) - unixToInternal;
  const nsec = buf.readInt32BE(9);
  const ms = Number(sec) * 1000 + Math.floor(nsec / 1e6);
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return undefined;
  const iso = new Date(ms).toISOString();
  // Keep the nanoseconds that Date cannot.
  const frac = nsec === 0 ? "" : `.${String(nsec).padStart(9, "0").replace(/0+$/, "")}`;
  return `${iso.slice(0, 19)}${frac}Z`;
}
