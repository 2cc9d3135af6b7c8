// The client→server header rewriter, byte by byte. Client header blocks are
// made by hpack.js's compressor (dynamic table, Huffman), the rewritten
// stream is decoded by a fresh hpack.js decompressor playing the server: it
// must read every block, with `:authority` fixed, and every other frame must
// come through byte for byte, however the stream is cut into reads.
import { describe, expect, test } from "bun:test";
import hpack from "hpack.js";
import { h2Frame as frame } from "./helpers";
import { ClientHeaderRewriter, H2StreamError, isValidAuthority, MAX_HEADER_BLOCK_BYTES } from "../../src/server/h2-authority";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
type Header = { name: string; value: string; neverIndex?: boolean };

interface HpackStream {
  write(data: unknown): void;
  read(): Buffer | Header | null;
  execute(cb?: (err: Error | null) => void): void;
}
const compressorOf = hpack as unknown as {
  compressor: { create(o: object): HpackStream };
  decompressor: { create(o: object): HpackStream };
};

/** A client connection: its encoder's dynamic table lives across blocks. */
function client() {
  const comp = compressorOf.compressor.create({ table: { maxSize: 4096 } });
  const encode = (headers: Header[]): Buffer => {
    comp.write(headers);
    const parts: Buffer[] = [];
    for (let b = comp.read(); b !== null; b = comp.read()) parts.push(b as Buffer);
    return Buffer.concat(parts);
  };
  return {
    /** HEADERS, split into CONTINUATIONs of `split` bytes when given; optional padding and priority. */
    headers(stream: number, headers: Header[], o: { split?: number; pad?: number; priority?: boolean; endStream?: boolean } = {}): Buffer {
      const block = encode(headers);
      const first = o.split ? block.subarray(0, o.split) : block;
      const rest = o.split ? block.subarray(o.split) : Buffer.alloc(0);
      let flags = (o.endStream ? 0x1 : 0) | (rest.length === 0 ? 0x4 : 0);
      let payload: Buffer = first;
      if (o.priority) {
        flags |= 0x20;
        payload = Buffer.concat([Buffer.from([0, 0, 0, 0, 15]), payload]);
      }
      if (o.pad !== undefined) {
        flags |= 0x8;
        payload = Buffer.concat([Buffer.from([o.pad]), payload, Buffer.alloc(o.pad)]);
      }
      const frames = [frame(0x1, flags, stream, payload)];
      for (let at = 0; at < rest.length; at += o.split ?? rest.length) {
        const piece = rest.subarray(at, at + (o.split ?? rest.length));
        frames.push(frame(0x9, at + piece.length >= rest.length ? 0x4 : 0, stream, piece));
      }
      return Buffer.concat(frames);
    },
  };
}

/** Splits the server's input back into frames and decodes every header block with one connection-long table. */
function serverView(bytes: Buffer) {
  expect(bytes.subarray(0, 24).equals(PREFACE)).toBe(true);
  const decomp = compressorOf.decompressor.create({ table: { maxSize: 4096 } });
  const blocks: { stream: number; headers: Record<string, string>; endStream: boolean }[] = [];
  const others: Buffer[] = [];
  let pending: { stream: number; parts: Buffer[]; endStream: boolean } | undefined;
  for (let at = 24; at < bytes.length; ) {
    const len = bytes.readUIntBE(at, 3);
    const type = bytes[at + 3]!;
    const flags = bytes[at + 4]!;
    const stream = bytes.readUInt32BE(at + 5);
    let payload = bytes.subarray(at + 9, at + 9 + len);
    expect(len).toBeLessThanOrEqual(16384);
    at += 9 + len;
    if (type === 0x1) {
      if (flags & 0x8) payload = payload.subarray(1, payload.length - payload[0]!);
      if (flags & 0x20) payload = payload.subarray(5);
      pending = { stream, parts: [payload], endStream: (flags & 0x1) !== 0 };
    } else if (type === 0x9) {
      expect(pending?.stream).toBe(stream);
      pending!.parts.push(payload);
    } else {
      expect(pending).toBeUndefined();
      others.push(bytes.subarray(at - 9 - len, at));
      continue;
    }
    if (flags & 0x4) {
      decomp.write(Buffer.concat(pending!.parts));
      decomp.execute();
      const headers: Record<string, string> = {};
      for (let h = decomp.read(); h !== null; h = decomp.read()) headers[(h as Header).name] = (h as Header).value;
      blocks.push({ stream: pending!.stream, headers, endStream: pending!.endStream });
      pending = undefined;
    }
  }
  return { blocks, others };
}

function run(input: Buffer, readSizes: (i: number) => number): Buffer {
  const out: Buffer[] = [];
  const r = new ClientHeaderRewriter((b) => out.push(Buffer.from(b)));
  for (let at = 0, i = 0; at < input.length; i++) {
    const n = Math.max(1, readSizes(i));
    r.feed(input.subarray(at, at + n));
    at += n;
  }
  return Buffer.concat(out);
}

const request = (path: string, authority: string, extra: Header[] = []): Header[] => [
  { name: ":method", value: "POST" },
  { name: ":scheme", value: "http" },
  { name: ":path", value: path },
  { name: ":authority", value: authority },
  { name: "content-type", value: "application/grpc" },
  { name: "te", value: "trailers" },
  { name: "user-agent", value: "grpc-go/1.26.0" },
  ...extra,
];

const SOCK = "/run/imagelet/imagelet.sock";
const data = (stream: number, n: number) => frame(0x0, 0x1, stream, Buffer.alloc(n, stream));
const settings = frame(0x4, 0, 0, Buffer.from([0, 4, 0, 0, 0xff, 0xff]));

/** A connection of an old client: path authority on every call, dynamic-table references from the 2nd on. */
function oldClientConnection() {
  const c = client();
  const big = { name: "x-padding", value: "p".repeat(40000) };
  return Buffer.concat([
    PREFACE,
    settings,
    c.headers(1, request("/runtime.v1.ImageService/ListImages", SOCK)),
    data(1, 5),
    c.headers(3, request("/runtime.v1.ImageService/ImageStatus", SOCK), { pad: 7, priority: true }),
    data(3, 20),
    // Over one frame: HEADERS + CONTINUATIONs (the default maximum frame size is 16 KiB).
    c.headers(5, request("/runtime.v1.ImageService/ImageStatus", SOCK, [big]), { split: 16000 }),
    data(5, 20),
    c.headers(7, request("/runtime.v1.ImageService/ListImages", SOCK, [big]), { split: 100, endStream: true }),
    frame(0x8, 0, 0, Buffer.from([0, 1, 0, 0])), // WINDOW_UPDATE
    c.headers(9, request("/runtime.v1.ImageService/ListImages", SOCK)),
    data(9, 5),
  ]);
}

describe("ClientHeaderRewriter", () => {
  test("authority check: hosts pass, socket paths do not", () => {
    for (const ok of ["localhost", "localhost:1234", "unix", "[::1]:80", "10.0.0.1", "%2Frun%2Fx.sock"]) expect(isValidAuthority(ok)).toBe(true);
    for (const bad of [SOCK, "/tmp/x.sock", "a b", "", "user@host"]) expect(isValidAuthority(bad)).toBe(false);
  });

  test("every block of an old client's connection reaches the server with `localhost`, other frames untouched", () => {
    const input = oldClientConnection();
    const whole = serverView(run(input, () => input.length));
    expect(whole.blocks.map((b) => b.stream)).toEqual([1, 3, 5, 7, 9]);
    for (const b of whole.blocks) {
      expect(b.headers[":authority"]).toBe("localhost");
      expect(b.headers["content-type"]).toBe("application/grpc");
      expect(b.headers["user-agent"]).toBe("grpc-go/1.26.0");
    }
    expect(whole.blocks[2]!.headers["x-padding"]).toHaveLength(40000);
    expect(whole.blocks[3]!.endStream).toBe(true);
    expect(whole.blocks[0]!.endStream).toBe(false);
    const expectedOthers = serverView(input).others; // the input's own non-header frames
    expect(whole.others.map((f) => f.toString("hex"))).toEqual(expectedOthers.map((f) => f.toString("hex")));
  });

  test("the same result however the reads are cut (1 byte, 7 bytes, random)", () => {
    const input = oldClientConnection();
    const want = serverView(run(input, () => input.length));
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % 3000;
    for (const sizes of [() => 1, () => 7, () => 9, () => 16393, random]) {
      expect(serverView(run(input, sizes))).toEqual(want);
    }
  });

  test("a new client's blocks pass byte for byte", () => {
    const c = client();
    const input = Buffer.concat([
      PREFACE,
      settings,
      c.headers(1, request("/runtime.v1.ImageService/ListImages", "localhost")),
      data(1, 5),
      c.headers(3, request("/runtime.v1.ImageService/ListImages", "localhost"), { split: 10 }),
      data(3, 5),
    ]);
    expect(run(input, () => input.length).equals(input)).toBe(true);
    expect(run(input, () => 3).equals(input)).toBe(true);
  });

  test("a new-style block after a rewritten one still decodes (tables stay in step)", () => {
    const c = client();
    const input = Buffer.concat([
      PREFACE,
      c.headers(1, request("/a", SOCK)),
      c.headers(3, request("/a", "localhost")), // refers to entries the first block added
      c.headers(5, request("/a", "localhost")),
    ]);
    const view = serverView(run(input, () => 5));
    expect(view.blocks.map((b) => [b.headers[":authority"], b.headers[":path"]])).toEqual([
      ["localhost", "/a"],
      ["localhost", "/a"],
      ["localhost", "/a"],
    ]);
  });

  test("what it cannot follow is refused, not passed on", () => {
    const c = client();
    const stray = Buffer.concat([PREFACE, frame(0x9, 0x4, 1, Buffer.from([0x82]))]);
    expect(() => run(stray, () => stray.length)).toThrow(H2StreamError);
    const interrupted = Buffer.concat([PREFACE, c.headers(1, request("/a", SOCK), { split: 5 }).subarray(0, 9 + 5), data(1, 1)]);
    expect(() => run(interrupted, () => interrupted.length)).toThrow(H2StreamError);
    const garbage = Buffer.concat([PREFACE, frame(0x1, 0x4, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))]);
    expect(() => run(garbage, () => garbage.length)).toThrow(H2StreamError);
    const huge = Buffer.concat([PREFACE, frame(0x1, 0, 1, Buffer.alloc(MAX_HEADER_BLOCK_BYTES))]);
    expect(() => run(huge, () => 1000)).toThrow(H2StreamError);
  });
});

describe("a header list over 64 KiB once decoded", () => {
  test("closes the connection even when its block is small (an entry of the dynamic table referenced thousands of times)", () => {
    const big = Buffer.concat([Buffer.from([0x40, 6]), Buffer.from("x-bomb"), Buffer.from([0x7f, 0xa1, 0x1e]), Buffer.alloc(4000, 0x62)]); // literal, incremental indexing, value 4000 bytes
    const block = Buffer.concat([big, Buffer.alloc(20, 0xbe)]); // then 20 references to entry 62: about 80 KiB decoded
    const bytes = Buffer.concat([PREFACE, frame(0x1, 0x4 | 0x1, 1, block)]);
    let error: unknown;
    try {
      new ClientHeaderRewriter(() => {}).feed(bytes);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(H2StreamError);
    expect((error as H2StreamError).code).toBe(0xb); // ENHANCE_YOUR_CALM: the GOAWAY's code
    expect((error as Error).message).toBe("header list over 65536 bytes");
    // 15 references (about 60 KiB) are still served.
    const forwarded: Buffer[] = [];
    new ClientHeaderRewriter((b) => forwarded.push(b)).feed(Buffer.concat([PREFACE, frame(0x1, 0x4 | 0x1, 1, Buffer.concat([big, Buffer.alloc(14, 0xbe)]))]));
    expect(Buffer.concat(forwarded).length).toBeGreaterThan(0);
  });
});
