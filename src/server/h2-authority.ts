// Rewrites the `:authority` of requests from clients that send a unix socket
// path there (kubelet and crictl before v1.30: grpc-go dialling a unix socket
// without overriding the authority sends `/run/imagelet/imagelet.sock`).
// Bun's HTTP/2 server, like Node's, resets such a stream with PROTOCOL_ERROR
// before any handler runs, so the bytes are fixed before the server sees them.
//
// Only the client→server direction is touched, and in it only header blocks:
// every other frame passes through byte for byte, without being buffered.
// A header block (HEADERS + CONTINUATIONs) is HPACK-decoded with a decoder
// whose dynamic table lives as long as the connection, because the client's
// encoder refers to entries it added in earlier blocks. A block that needs no
// change is forwarded as it came; one that does is re-encoded without the
// dynamic table (static indices and literals "without indexing"), so the
// server's decoder never depends on entries it was not shown.
import hpack from "hpack.js";

/** The client connection preface (RFC 9113 §3.4), before its first SETTINGS. */
export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const PREFACE_BYTES = CLIENT_PREFACE.length;
const FRAME_HEADER_BYTES = 9;
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const TYPE_GOAWAY = 0x7;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
const PRIORITY_BYTES = 5;

/** A header block (its frames, as received) larger than this closes the connection: memory stays bounded. */
export const MAX_HEADER_BLOCK_BYTES = 64 * 1024;
/**
 * A header block whose fields add up to more than this, counted as
 * SETTINGS_MAX_HEADER_LIST_SIZE counts them (name + value + 32 each), closes
 * the connection: Bun's server refuses such a request anyway (its own limit is
 * 65,535), and a small block can decode to much more through the dynamic
 * table (one 4 KiB entry referenced by thousands of one-byte fields), which
 * the rewriter would otherwise re-encode in full.
 */
export const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** The SETTINGS_MAX_FRAME_SIZE every HTTP/2 peer must accept (the default; Bun's server advertises no other). */
export const MAX_FRAME_PAYLOAD_BYTES = 16384;
/** SETTINGS_HEADER_TABLE_SIZE's default: the client's encoder starts with it and the server advertises no other. */
const HEADER_TABLE_BYTES = 4096;
/** What a path-like `:authority` becomes: what grpc-go itself sends for unix sockets since v1.30-era clients. */
export const REPLACEMENT_AUTHORITY = "localhost";

/** RFC 9113 §7 error codes that imagelet's own GOAWAYs carry. */
export const H2_ERROR = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, INTERNAL_ERROR: 0x2, COMPRESSION_ERROR: 0x9, ENHANCE_YOUR_CALM: 0xb } as const;

/**
 * A client stream the rewriter cannot follow; the connection is closed with
 * GOAWAY carrying `code` (the server would close it too).
 */
export class H2StreamError extends Error {
  constructor(
    message: string,
    readonly code: number = H2_ERROR.PROTOCOL_ERROR,
  ) {
    super(message);
  }
}

/** A GOAWAY frame: no stream above `lastStreamId` was or will be processed; `code` says why. */
export function goawayFrame(lastStreamId: number, code: number): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_BYTES + 8);
  writeFrameHeader(out, 0, 8, TYPE_GOAWAY, 0, 0);
  out.writeUInt32BE(lastStreamId & 0x7fffffff, FRAME_HEADER_BYTES);
  out.writeUInt32BE(code, FRAME_HEADER_BYTES + 4);
  return out;
}

export interface HeaderField {
  name: string;
  value: string;
  neverIndex: boolean;
}

// RFC 3986 authority without userinfo, which HTTP/2 forbids: a reg-name or IPv4
// address, or an IP literal in brackets, then an optional port. Anything else
// (a socket path above all) is what the server refuses.
const VALID_AUTHORITY = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$/;

export function isValidAuthority(authority: string): boolean {
  return VALID_AUTHORITY.test(authority);
}

// Static table (RFC 7541 appendix A) lookups for the re-encoder, from hpack.js's copy.
const STATIC_FULL = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
hpack["static-table"].table.forEach((entry, i) => {
  const key = `${entry.name}\0${entry.value}`;
  if (!STATIC_FULL.has(key)) STATIC_FULL.set(key, i + 1);
  if (!STATIC_NAME.has(entry.name)) STATIC_NAME.set(entry.name, i + 1);
});

/** Header octets as a string, one char per octet, so re-encoding gives back the same octets. */
function octets(bytes: Uint8Array | number[]): string {
  return (bytes instanceof Uint8Array ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : Buffer.from(bytes)).toString("latin1");
}

/** One connection's HPACK decoding state (RFC 7541 §6): the dynamic table outlives each block. */
export class HeaderBlockDecoder {
  private readonly table = hpack.table.create({ maxSize: HEADER_TABLE_BYTES });
  /** Empty between blocks; after a failed block the connection is closed, so leftovers never matter. */
  private readonly reader = hpack.decoder.create();

  decode(fragment: Uint8Array): HeaderField[] {
    const decoder = this.reader;
    decoder.push(fragment);
    const fields: HeaderField[] = [];
    let listBytes = 0;
    try {
      while (!decoder.isEmpty()) {
        const before = fields.length;
        this.decodeOne(decoder, fields);
        const field = fields[before];
        if (field === undefined) continue; // a table size update adds no field
        listBytes += field.name.length + field.value.length + 32;
        if (listBytes > MAX_HEADER_LIST_BYTES) {
          throw new H2StreamError(`header list over ${MAX_HEADER_LIST_BYTES} bytes`, H2_ERROR.ENHANCE_YOUR_CALM);
        }
      }
    } catch (e) {
      if (e instanceof H2StreamError) throw e;
      throw new H2StreamError(`undecodable header block: ${e instanceof Error ? e.message : String(e)}`, H2_ERROR.COMPRESSION_ERROR);
    }
    return fields;
  }

  private decodeOne(decoder: ReturnType<typeof hpack.decoder.create>, fields: HeaderField[]): void {
    if (decoder.decodeBit()) {
      const entry = this.table.lookup(decoder.decodeInt()); // 1xxxxxxx: indexed field
      fields.push({ name: entry.name, value: entry.value, neverIndex: false });
      return;
    }
    const incremental = decoder.decodeBit() === 1; // 01xxxxxx: literal, added to the table
    let neverIndex = false;
    if (!incremental) {
      if (decoder.decodeBit()) {
        this.table.updateSize(decoder.decodeInt()); // 001xxxxx: dynamic table size update
        return;
      }
      neverIndex = decoder.decodeBit() === 1; // 0001xxxx never indexed, 0000xxxx without indexing
    }
    const nameIndex = decoder.decodeInt();
    const name = nameIndex === 0 ? octets(decoder.decodeStr()) : this.table.lookup(nameIndex).name;
    const value = octets(decoder.decodeStr());
    if (incremental) this.table.add(name, value, name.length, value.length);
    fields.push({ name, value, neverIndex });
  }
}

/** Fields with every invalid `:authority` replaced, or undefined when none needs it. */
export function normalizedFields(fields: readonly HeaderField[]): HeaderField[] | undefined {
  let out: HeaderField[] | undefined;
  fields.forEach((field, i) => {
    if (field.name !== ":authority" || isValidAuthority(field.value)) return;
    out ??= fields.slice();
    out[i] = { ...field, value: REPLACEMENT_AUTHORITY };
  });
  return out;
}

// --- HPACK encoding without the dynamic table -------------------------------

function intLength(value: number, prefixBits: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) return 1;
  let n = 2;
  for (let rest = value - max; rest >= 128; rest >>>= 7) n++;
  return n;
}

function writeInt(out: Buffer, at: number, value: number, prefixBits: number, pattern: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out[at] = pattern | value;
    return at + 1;
  }
  out[at++] = pattern | max;
  let rest = value - max;
  while (rest >= 128) {
    out[at++] = (rest & 0x7f) | 0x80;
    rest >>>= 7;
  }
  out[at] = rest;
  return at + 1;
}

function stringLength(s: string): number {
  return intLength(s.length, 7) + s.length;
}

function writeString(out: Buffer, at: number, s: string): number {
  at = writeInt(out, at, s.length, 7, 0x00); // H=0: no Huffman coding
  return at + out.write(s, at, "latin1");
}

/**
 * A header block that uses only the static table: a fully matching static
 * entry is indexed, anything else is a literal without indexing (never
 * indexed where the client said so), so the server's dynamic table is never
 * read or changed.
 */
export function encodeWithoutDynamicTable(fields: readonly HeaderField[]): Buffer {
  let size = 0;
  for (const f of fields) {
    const full = f.neverIndex ? undefined : STATIC_FULL.get(`${f.name}\0${f.value}`);
    if (full !== undefined) size += intLength(full, 7);
    else {
      const nameIndex = STATIC_NAME.get(f.name);
      size += (nameIndex === undefined ? 1 + stringLength(f.name) : intLength(nameIndex, 4)) + stringLength(f.value);
    }
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of fields) {
    const full = f.neverIndex ? undefined : STATIC_FULL.get(`${f.name}\0${f.value}`);
    if (full !== undefined) {
      at = writeInt(out, at, full, 7, 0x80);
      continue;
    }
    const pattern = f.neverIndex ? 0x10 : 0x00;
    const nameIndex = STATIC_NAME.get(f.name);
    if (nameIndex === undefined) at = writeString(out, writeInt(out, at, 0, 4, pattern), f.name);
    else at = writeInt(out, at, nameIndex, 4, pattern);
    at = writeString(out, at, f.value);
  }
  return out;
}

function writeFrameHeader(out: Buffer, at: number, length: number, type: number, flags: number, streamId: number): number {
  out.writeUIntBE(length, at, 3);
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(streamId, at + 5);
  return at + FRAME_HEADER_BYTES;
}

/** HEADERS (+ CONTINUATIONs) carrying `block`, no payload over the default maximum frame size, in one buffer. */
export function headerFrames(streamId: number, endStream: boolean, priority: Uint8Array | undefined, block: Uint8Array): Buffer {
  const first = MAX_FRAME_PAYLOAD_BYTES - (priority ? PRIORITY_BYTES : 0);
  const continuations = block.length <= first ? 0 : Math.ceil((block.length - first) / MAX_FRAME_PAYLOAD_BYTES);
  const out = Buffer.allocUnsafe((1 + continuations) * FRAME_HEADER_BYTES + (priority ? PRIORITY_BYTES : 0) + block.length);
  let taken = Math.min(first, block.length);
  let flags = (endStream ? FLAG_END_STREAM : 0) | (priority ? FLAG_PRIORITY : 0) | (continuations === 0 ? FLAG_END_HEADERS : 0);
  let at = writeFrameHeader(out, 0, taken + (priority ? PRIORITY_BYTES : 0), TYPE_HEADERS, flags, streamId);
  if (priority) {
    out.set(priority, at);
    at += PRIORITY_BYTES;
  }
  out.set(block.subarray(0, taken), at);
  at += taken;
  for (let i = 0; i < continuations; i++) {
    const n = Math.min(MAX_FRAME_PAYLOAD_BYTES, block.length - taken);
    flags = i === continuations - 1 ? FLAG_END_HEADERS : 0;
    at = writeFrameHeader(out, at, n, TYPE_CONTINUATION, flags, streamId);
    out.set(block.subarray(taken, taken + n), at);
    at += n;
    taken += n;
  }
  return out;
}

// --- the client→server byte stream -------------------------------------------

/** A header block being collected: its frames as received, and the parts the server must see. */
interface PendingBlock {
  streamId: number;
  frames: Buffer[];
  bytes: number;
  /** HEADERS' flags (END_STREAM, PRIORITY) and priority fields, kept through a rewrite. */
  flags: number;
  priority: Uint8Array | undefined;
  fragments: Uint8Array[];
}

/**
 * Follows the client→server bytes of one HTTP/2 connection and hands them on
 * (through `forward`) with every header block's `:authority` made valid.
 * Throws H2StreamError for what it cannot follow; the caller closes the connection.
 */
export class ClientHeaderRewriter {
  private prefaceLeft = PREFACE_BYTES;
  /** Payload bytes of a frame that passes through untouched, still to come. */
  private passLeft = 0;
  /** A frame header split across reads. */
  private readonly partialHeader = Buffer.alloc(FRAME_HEADER_BYTES);
  private partialHeaderFill = 0;
  /** A header-bearing frame split across reads: its bytes so far, and how many are still to come. */
  private partialFrame: Buffer | undefined;
  private partialFrameFill = 0;
  private block: PendingBlock | undefined;
  private readonly decoder = new HeaderBlockDecoder();
  /**
   * True while every block reached the server as the client encoded it, so
   * both dynamic tables agree and an unchanged block may be forwarded as is.
   * After the first rewrite the server's table misses what the client added
   * in that block, so every later block is re-encoded too.
   */
  private tablesInStep = true;

  /** The highest stream whose header block was handed on: a GOAWAY's last stream. */
  lastStreamId = 0;

  /** Told, at the end of each header block, whether it needed a rewrite. */
  onHeaderBlock: ((rewritten: boolean) => void) | undefined;

  /** `forward` may be replaced when the output moves to another consumer (first-request.ts). */
  constructor(public forward: (bytes: Buffer) => void) {}

  feed(chunk: Buffer): void {
    let pos = 0;
    let passStart = 0; // chunk[passStart, pos) is forwarded unchanged
    const flush = () => {
      if (pos > passStart) this.forward(chunk.subarray(passStart, pos));
    };
    while (pos < chunk.length) {
      const available = chunk.length - pos;
      if (this.prefaceLeft > 0 || this.passLeft > 0) {
        const n = Math.min(available, this.prefaceLeft > 0 ? this.prefaceLeft : this.passLeft);
        if (this.prefaceLeft > 0) this.prefaceLeft -= n;
        else this.passLeft -= n;
        pos += n;
        continue;
      }
      if (this.partialFrame) {
        flush();
        const n = Math.min(available, this.partialFrame.length - this.partialFrameFill);
        chunk.copy(this.partialFrame, this.partialFrameFill, pos, pos + n);
        this.partialFrameFill += n;
        passStart = pos += n;
        if (this.partialFrameFill === this.partialFrame.length) {
          const frame = this.partialFrame;
          this.partialFrame = undefined;
          this.onHeaderFrame(frame);
        }
        continue;
      }
      if (this.partialHeaderFill > 0 || available < FRAME_HEADER_BYTES) {
        flush();
        const n = Math.min(available, FRAME_HEADER_BYTES - this.partialHeaderFill);
        chunk.copy(this.partialHeader, this.partialHeaderFill, pos, pos + n);
        this.partialHeaderFill += n;
        passStart = pos += n;
        if (this.partialHeaderFill === FRAME_HEADER_BYTES) {
          this.partialHeaderFill = 0;
          this.onSplitFrameHeader();
        }
        continue;
      }
      const length = chunk.readUIntBE(pos, 3);
      const type = chunk[pos + 3] ?? 0;
      if (type !== TYPE_HEADERS && type !== TYPE_CONTINUATION && this.block === undefined) {
        pos += FRAME_HEADER_BYTES;
        this.passLeft = length;
        continue;
      }
      this.checkFrameLength(length);
      const end = pos + FRAME_HEADER_BYTES + length;
      if (end <= chunk.length && this.block === undefined && this.tablesInStep && this.isCompleteHeaders(chunk, pos)) {
        // The common case: one whole HEADERS frame in this read. Decoded in place,
        // and left in the pass-through range unless it needs a rewrite.
        const rewritten = this.rewriteSingleFrame(chunk.subarray(pos, end));
        if (rewritten === undefined) {
          pos = end;
          continue;
        }
        flush();
        this.forward(rewritten);
        passStart = pos = end;
        continue;
      }
      flush();
      if (end <= chunk.length) {
        this.onHeaderFrame(chunk.subarray(pos, end));
        passStart = pos = end;
        continue;
      }
      this.partialFrame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
      this.partialFrameFill = 0;
      passStart = pos; // the loop copies from here into partialFrame
    }
    flush();
  }

  private isCompleteHeaders(chunk: Buffer, pos: number): boolean {
    return chunk[pos + 3] === TYPE_HEADERS && ((chunk[pos + 4] ?? 0) & FLAG_END_HEADERS) !== 0;
  }

  private checkFrameLength(length: number): void {
    if (FRAME_HEADER_BYTES + length + (this.block?.bytes ?? 0) > MAX_HEADER_BLOCK_BYTES) {
      throw new H2StreamError(`header block over ${MAX_HEADER_BLOCK_BYTES} bytes`, H2_ERROR.ENHANCE_YOUR_CALM);
    }
  }

  private onSplitFrameHeader(): void {
    const header = this.partialHeader;
    const length = header.readUIntBE(0, 3);
    const type = header[3] ?? 0;
    if (type !== TYPE_HEADERS && type !== TYPE_CONTINUATION && this.block === undefined) {
      this.forward(Buffer.from(header)); // a copy: partialHeader is reused
      this.passLeft = length;
      return;
    }
    this.checkFrameLength(length);
    this.partialFrame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
    header.copy(this.partialFrame, 0);
    this.partialFrameFill = FRAME_HEADER_BYTES;
    if (length === 0) {
      const frame = this.partialFrame;
      this.partialFrame = undefined;
      this.onHeaderFrame(frame);
    }
  }

  /** The fast path's decode: a whole HEADERS frame with END_HEADERS; undefined when it may go as it is. */
  private rewriteSingleFrame(frame: Buffer): Buffer | undefined {
    const block = this.startBlock(frame);
    const fields = this.decoder.decode(concatFragments(block.fragments));
    const normalized = normalizedFields(fields);
    this.onHeaderBlock?.(normalized !== undefined);
    this.lastStreamId = Math.max(this.lastStreamId, block.streamId);
    if (normalized === undefined) return undefined;
    this.tablesInStep = false;
    return headerFrames(block.streamId, (block.flags & FLAG_END_STREAM) !== 0, block.priority, encodeWithoutDynamicTable(normalized));
  }

  /** A complete HEADERS or CONTINUATION frame (owned by the caller's chunk or a private buffer). */
  private onHeaderFrame(frame: Buffer): void {
    const type = frame[3];
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    if (this.block === undefined) {
      if (type !== TYPE_HEADERS) throw new H2StreamError("CONTINUATION without HEADERS");
      this.block = this.startBlock(frame);
    } else {
      if (type !== TYPE_CONTINUATION || streamId !== this.block.streamId) {
        throw new H2StreamError("header block interrupted by another frame");
      }
      this.block.frames.push(frame);
      this.block.bytes += frame.length;
      this.block.fragments.push(frame.subarray(FRAME_HEADER_BYTES));
    }
    if (((frame[4] ?? 0) & FLAG_END_HEADERS) !== 0) this.endBlock(this.block);
  }

  private startBlock(frame: Buffer): PendingBlock {
    const flags = frame[4] ?? 0;
    let start = FRAME_HEADER_BYTES;
    let end = frame.length;
    if (flags & FLAG_PADDED) {
      const padding = frame[start] ?? 0;
      start += 1;
      end -= padding;
    }
    let priority: Uint8Array | undefined;
    if (flags & FLAG_PRIORITY) {
      priority = frame.subarray(start, start + PRIORITY_BYTES);
      start += PRIORITY_BYTES;
    }
    if (end < start) throw new H2StreamError("HEADERS padding longer than its payload");
    return {
      streamId: frame.readUInt32BE(5) & 0x7fffffff,
      frames: [frame],
      bytes: frame.length,
      flags,
      priority,
      fragments: [frame.subarray(start, end)],
    };
  }

  private endBlock(block: PendingBlock): void {
    this.block = undefined;
    const fields = this.decoder.decode(concatFragments(block.fragments));
    const normalized = normalizedFields(fields);
    this.onHeaderBlock?.(normalized !== undefined);
    this.lastStreamId = Math.max(this.lastStreamId, block.streamId);
    if (normalized === undefined && this.tablesInStep) {
      for (const frame of block.frames) this.forward(frame);
      return;
    }
    this.tablesInStep = false;
    const endStream = (block.flags & FLAG_END_STREAM) !== 0;
    this.forward(headerFrames(block.streamId, endStream, block.priority, encodeWithoutDynamicTable(normalized ?? fields)));
  }
}

function concatFragments(fragments: Uint8Array[]): Uint8Array {
  return fragments.length === 1 && fragments[0] ? fragments[0] : Buffer.concat(fragments);
}
