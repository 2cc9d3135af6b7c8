// A bounded fuzz of the bbolt reader (src/backends/containerd/bbolt.ts) on the
// meta.db Debian's containerd 1.6 wrote (test/fixtures/containerd): bytes
// flipped, fields zeroed, pages copied over others, the file cut short. The
// reader must answer each with a snapshot or a typed error (BoltError for the
// file, SchemaError for a schema that is not containerd's), never anything
// else, within a small time per case. The seed is fixed: a failure replays.
import { describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { BoltError } from "../../src/backends/containerd/bbolt";
import { StoreProblem } from "../../src/backends/common/files";
import { ContainerdStore } from "../../src/backends/containerd/index";
import { SchemaError, readImages } from "../../src/backends/containerd/metadata";
import { memoryLogger } from "./helpers";
import { resealMeta } from "./bolt-writer";

const META = resolve(import.meta.dir, "../fixtures/containerd/root/io.containerd.metadata.v1.bolt/meta.db");
const CASES = 400;
/** Per case: a read of the fixture (128 pages) takes a few ms; the margin is for a loaded shared machine, a loop or a quadratic walk would pass it. */
const MAX_CASE_MS = 1000;

/** mulberry32: small, seeded, good enough to pick offsets. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Mutation = (file: Buffer, r: () => number, pageSize: number) => Buffer;
const int = (r: () => number, n: number) => Math.floor(r() * n);

const mutations: Record<string, Mutation> = {
  // Only the meta page of the commit before the last: the last commit is read, exactly as before.
  "damage the older meta": (f, r, ps) => {
    const older = f.readBigUInt64LE(16 + 48) < f.readBigUInt64LE(ps + 16 + 48) ? 0 : 1;
    for (let i = 0, n = 1 + int(r, 8); i < n; i++) f[older * ps + int(r, 80)]! ^= 1 << int(r, 8);
    return f;
  },
  "flip bytes": (f, r) => {
    for (let i = 0, n = 1 + int(r, 8); i < n; i++) f[int(r, f.length)]! ^= 1 << int(r, 8);
    return f;
  },
  "flip a header field": (f, r, ps) => {
    // The 16-byte page header and the first elements, where ids, counts and offsets live.
    const page = int(r, f.length / ps);
    f[page * ps + int(r, 64)]! ^= 0xff;
    return f;
  },
  "zero a page": (f, r, ps) => {
    const page = int(r, f.length / ps);
    f.fill(0, page * ps, (page + 1) * ps);
    return f;
  },
  "copy a page over another": (f, r, ps) => {
    const from = int(r, f.length / ps);
    const to = int(r, f.length / ps);
    f.copy(f, to * ps, from * ps, (from + 1) * ps);
    return f;
  },
  "huge u32 in a page": (f, r, ps) => {
    const page = 2 + int(r, f.length / ps - 2);
    const at = page * ps + 4 * int(r, 16);
    f.writeUInt32LE([0xffffffff, 0x7fffffff, 0x10000, 1 << 24][int(r, 4)]!, at);
    return f;
  },
  truncate: (f, r) => f.subarray(0, int(r, f.length)),
  "truncate inside the metas": (f, r, ps) => f.subarray(0, int(r, 2 * ps)),
  "a meta field changed and resealed": (f, r, ps) => {
    // A checksum that matches: what the reader then trusts is the fields (page size, root, high-water mark).
    const slot = int(r, 2);
    const m = slot * ps + 16;
    const field = [8, 16, 40, 48][int(r, 4)]!;
    const values = [0n, 1n, 3n, 512n, 4095n, 1n << 20n, 1n << 40n, (1n << 64n) - 1n];
    const v = values[int(r, values.length)]!;
    if (field === 8) f.writeUInt32LE(Number(v & 0xffffffffn), m + 8);
    else f.writeBigUInt64LE(v, m + field);
    resealMeta(f, ps, slot);
    return f;
  },
  "truncate to a page boundary": (f, r, ps) => f.subarray(0, ps * int(r, f.length / ps)),
};

describe("bbolt reader fuzz (fixed seed)", () => {
  test(`${CASES} damaged copies of containerd's meta.db: a snapshot or a typed error, each quickly`, () => {
    const original = readFileSync(META);
    const pageSize = original.readUInt32LE(16 + 8);
    expect(pageSize).toBe(4096);
    const baseline = readImages(META, "k8s.io");
    expect(baseline.images.length).toBeGreaterThan(5);
    const dir = mkdtempSync(join(tmpdir(), "imagelet-bolt-fuzz-"));
    // A copy of the whole root, so that the backend (images.ts: names, targets, labels, times) meets the damage too.
    cpSync(resolve(META, "../.."), join(dir, "root"), { recursive: true });
    const path = join(dir, "root/io.containerd.metadata.v1.bolt/meta.db");
    const log = memoryLogger();
    const r = rng(0x16_c0de);
    const names = Object.keys(mutations);
    const outcomes = new Map<string, number>();
    let slowest = 0;
    try {
      for (let i = 0; i < CASES; i++) {
        const name = names[i % names.length]!;
        const file = mutations[name]!(Buffer.from(original), r, pageSize);
        writeFileSync(path, file);
        const started = performance.now();
        let outcome: string;
        try {
          const snap = readImages(path, "k8s.io");
          // A snapshot is whole: every entry has a name, and a target or a reason it has none.
          for (const e of snap.images) {
            expect(typeof e.name).toBe("string");
            expect(e.target !== undefined || typeof e.problem === "string").toBe(true);
          }
          if (name === "damage the older meta") expect({ ...snap, meta: undefined }).toEqual({ ...baseline, meta: undefined });
          outcome = "snapshot";
        } catch (e) {
          if (!(e instanceof BoltError) && !(e instanceof SchemaError)) {
            throw new Error(`case ${i} (${name}): untyped ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
          }
          outcome = e instanceof BoltError ? `BoltError ${e.kind}` : "SchemaError";
          // The file stood still: it is never "changing".
          expect(outcome).not.toBe("BoltError changing");
        }
        // The backend answers records or a StoreProblem naming meta.db; anything else would take the list down as a bug.
        try {
          const records = new ContainerdStore({ root: join(dir, "root"), namespace: "k8s.io" }, { name: "fuzz", log, platform: { os: "linux", architecture: "amd64" } }).list();
          for (const r of records) expect(r.id).toMatch(/^sha256:[a-f0-9]{64}$/);
        } catch (e) {
          if (!(e instanceof StoreProblem)) throw new Error(`case ${i} (${name}): the backend threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
        }
        const ms = performance.now() - started;
        slowest = Math.max(slowest, ms);
        if (ms > MAX_CASE_MS) throw new Error(`case ${i} (${name}) took ${ms.toFixed(0)} ms`);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // The fuzz reaches both ends: intact reads and each kind of refusal the file can cause.
    console.log(`bbolt fuzz: ${JSON.stringify(Object.fromEntries(outcomes))}, slowest case ${slowest.toFixed(1)} ms`);
    expect(outcomes.get("snapshot") ?? 0).toBeGreaterThan(20);
    expect(outcomes.get("BoltError corrupt") ?? 0).toBeGreaterThan(20);
    expect(outcomes.get("BoltError not-bbolt") ?? 0).toBeGreaterThan(0);
  });
});
