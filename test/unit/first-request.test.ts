// Which way a connection goes, from its first request: the as-sent fast path
// for clients whose `:authority` is a host, the rewriting path for those that
// send a socket path; and imagelet's own SETTINGS for clients (grpc-go) that
// wait for the server's preface before their first request.
import { describe, expect, test } from "bun:test";
import hpack from "hpack.js";
import { h2Frame as frame } from "./helpers";
import { FirstRequestSniffer, type Decision } from "../../src/server/first-request";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const EMPTY_SETTINGS = "000000040000000000";

type Header = { name: string; value: string };
const codec = hpack as unknown as {
  compressor: { create(o: object): { write(h: Header[]): void; read(): Buffer | null } };
  decompressor: { create(o: object): { write(b: Buffer): void; execute(): void; read(): Header | null } };
};

function headersFrame(authority: string): Buffer {
  const c = codec.compressor.create({ table: { maxSize: 4096 } });
  c.write([
    { name: ":method", value: "POST" },
    { name: ":scheme", value: "http" },
    { name: ":path", value: "/runtime.v1.ImageService/ListImages" },
    { name: ":authority", value: authority },
    { name: "content-type", value: "application/grpc" },
  ]);
  const parts: Buffer[] = [];
  for (let b = c.read(); b !== null; b = c.read()) parts.push(b);
  return frame(0x1, 0x4, 1, Buffer.concat(parts));
}

const SETTINGS = frame(0x4, 0, 0, Buffer.from([0, 4, 0, 0x40, 0, 0]));
const SETTINGS_ACK = frame(0x4, 0x1, 0);
const WINDOW_UPDATE = frame(0x8, 0, 0, Buffer.from([0, 0x0f, 0, 0]));
const DATA = frame(0x0, 0x1, 1, Buffer.from([0, 0, 0, 0, 0]));

function sniff(chunks: Buffer[]) {
  const sent: string[] = [];
  const s = new FirstRequestSniffer((b) => sent.push(b.toString("hex")));
  let decision: Decision | undefined;
  let decidedAt = -1;
  chunks.forEach((c, i) => {
    if (decision) return;
    decision = s.feed(c);
    if (decision) decidedAt = i;
  });
  return { decision, decidedAt, sent };
}

function authorityOf(bytes: Buffer[]): string | undefined {
  const all = Buffer.concat(bytes);
  const d = codec.decompressor.create({ table: { maxSize: 4096 } });
  for (let at = 24; at < all.length; ) {
    const len = all.readUIntBE(at, 3);
    if (all[at + 3] === 0x1) {
      d.write(all.subarray(at + 9, at + 9 + len));
      d.execute();
      for (let h = d.read(); h !== null; h = d.read()) if (h.name === ":authority") return h.value;
    }
    at += 9 + len;
  }
  return undefined;
}

describe("FirstRequestSniffer", () => {
  test("a client that sends its request at once goes as sent, unchanged, without imagelet's SETTINGS", () => {
    const input = Buffer.concat([PREFACE, SETTINGS, WINDOW_UPDATE, headersFrame("localhost"), DATA]);
    const { decision, sent } = sniff([input]);
    expect(decision?.rewrite).toBe(false);
    expect(decision?.bytes.equals(input)).toBe(true);
    expect(sent).toEqual([]);
  });

  test("byte at a time: imagelet's SETTINGS go out once, the ACK is removed wherever it falls", () => {
    const headers = headersFrame("/run/imagelet/imagelet.sock");
    const input = Buffer.concat([PREFACE, SETTINGS, SETTINGS_ACK, headers, DATA]);
    const bytes = [...input].map((b) => Buffer.from([b]));
    const { decision, sent, decidedAt } = sniff(bytes);
    expect(sent).toEqual([EMPTY_SETTINGS]);
    expect(decision?.rewrite).toBe(true);
    // Decided at the last byte of the HEADERS frame; the rest follows on the socket.
    expect(decidedAt).toBe(input.length - DATA.length - 1);
    expect(Buffer.concat([decision!.bytes, ...bytes.slice(decidedAt + 1)]).equals(Buffer.concat([PREFACE, SETTINGS, headers, DATA]))).toBe(true);
    expect(authorityOf(decision!.rewritten)).toBe("localhost");
  });

  test("grpc-go: waits for the server's SETTINGS; its ACK is removed, its path authority rewritten", () => {
    const first = Buffer.concat([PREFACE, SETTINGS, WINDOW_UPDATE]);
    const second = Buffer.concat([SETTINGS_ACK, headersFrame("/run/imagelet/imagelet.sock"), DATA]);
    const { decision, decidedAt, sent } = sniff([first, second]);
    expect(sent).toEqual([EMPTY_SETTINGS]);
    expect(decidedAt).toBe(1);
    expect(decision?.rewrite).toBe(true);
    // The server never sees the acknowledgement of a SETTINGS it did not send.
    expect(decision!.bytes.equals(Buffer.concat([first, headersFrame("/run/imagelet/imagelet.sock"), DATA]))).toBe(true);
    expect(authorityOf(decision!.rewritten)).toBe("localhost");
  });

  test("grpc-go sending localhost goes as sent, without the ACK", () => {
    const first = Buffer.concat([PREFACE, SETTINGS]);
    const { decision, sent } = sniff([first, Buffer.concat([SETTINGS_ACK, headersFrame("localhost")])]);
    expect(sent).toEqual([EMPTY_SETTINGS]);
    expect(decision?.rewrite).toBe(false);
    expect(decision!.bytes.equals(Buffer.concat([first, headersFrame("localhost")]))).toBe(true);
  });

  test("a request that arrives before the ACK of imagelet's SETTINGS waits for it", () => {
    const { decision, sent } = sniff([Buffer.concat([PREFACE, SETTINGS]), headersFrame("localhost")]);
    expect(sent).toEqual([EMPTY_SETTINGS]);
    expect(decision).toBeUndefined();
    const later = sniff([Buffer.concat([PREFACE, SETTINGS]), headersFrame("localhost"), Buffer.concat([WINDOW_UPDATE, SETTINGS_ACK])]);
    expect(later.decision?.rewrite).toBe(false);
    expect(later.decision!.bytes.equals(Buffer.concat([PREFACE, SETTINGS, headersFrame("localhost"), WINDOW_UPDATE]))).toBe(true);
  });

  test("not HTTP/2 goes to the server as it came; endless frames before a request take the careful path", () => {
    const junk = Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(sniff([junk]).decision).toMatchObject({ rewrite: false, bytes: junk });
    const pings = Array.from({ length: 6000 }, () => frame(0x6, 0, 0, Buffer.alloc(8)));
    const flood = sniff([PREFACE, SETTINGS, SETTINGS_ACK, ...pings]);
    expect(flood.decision?.rewrite).toBe(true);
  });
});
