// The containerd backend on a root written by Debian's containerd 1.6
// (scripts/make-fixtures-containerd), checked against what containerd's own
// CRI plugin answered on that root (test/fixtures/containerd/expected.json);
// and its bbolt reader on files crafted to be hostile (test/unit/bolt-writer.ts).
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BackendContext, ImageRecord, Platform } from "../../src/backend/contract";
import { BoltError, BoltSnapshot, readMeta, readSnapshot, readVarint, readGoTime, fnv64a } from "../../src/backends/containerd/bbolt";
import { openSync, closeSync, fstatSync } from "node:fs";
import containerd, { ContainerdStore, type ContainerdStoreOptions } from "../../src/backends/containerd/index";
import { classifyName, platformEntries } from "../../src/backends/containerd/images";
import { readImages } from "../../src/backends/containerd/metadata";
import { StoreProblem } from "../../src/backends/common/files";
import { goTime, imageRecord, resealMeta, varint, writeBolt, type Tree } from "./bolt-writer";
import { memoryLogger } from "./helpers";

const FIXTURE = resolve(import.meta.dir, "../fixtures/containerd");
const ROOT = join(FIXTURE, "root");
interface CriImage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: number;
  uid: number | null;
  username: string;
  user: string;
}
const expected: { cri: CriImage[]; ctr: Record<string, { name: string; target: string }[]>; removed: { config: string; manifest: string } } = JSON.parse(
  readFileSync(join(FIXTURE, "expected.json"), "utf8"),
);
const amd64: Platform = { os: "linux", architecture: "amd64" };

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "imagelet-containerd-"));
  temps.push(d);
  return d;
}

function store(opts: Partial<ContainerdStoreOptions> = {}) {
  const log = memoryLogger();
  const ctx: BackendContext = { name: "ctd", log, baseDir: "/", platform: amd64, setNotice: () => {} };
  return { store: new ContainerdStore({ root: ROOT, namespace: "k8s.io", ...opts }, ctx), log };
}
const warned = (log: ReturnType<typeof memoryLogger>, needle: string) => log.lines.filter((l) => l.level === "warn" && l.msg.includes(needle));
const byId = (records: readonly ImageRecord[], id: string) => records.find((r) => r.id === id);

describe("agrees with containerd's CRI on a root containerd 1.6 wrote", () => {
  test("the same images, IDs, tags, repo digests, sizes and users", () => {
    const records = store().store.list();
    expect(records.map((r) => r.id).sort()).toEqual(expected.cri.map((i) => i.id).sort());
    for (const want of expected.cri) {
      const r = byId(records, want.id)!;
      expect(r.repoTags.slice().sort()).toEqual(want.repoTags);
      expect(r.repoDigests.slice().sort()).toEqual(want.repoDigests);
      // containerd's rule: Σ descriptor sizes of target, index, manifest, config, layers.
      expect(r.size).toBe(want.size);
      expect(r.user ?? "").toBe(want.user);
      expect(r.kind).toBe("oci");
    }
  });

  test("the fixture has the cases the tests rely on", () => {
    const k8s = expected.ctr["k8s.io"]!.map((r) => r.name);
    expect(k8s.some((n) => /^sha256:[a-f0-9]{64}$/.test(n))).toBe(true); // containerd's own ID name
    expect(k8s.some((n) => n.includes("@sha256:"))).toBe(true); // name@digest
    expect(expected.cri.some((i) => i.repoTags.length === 0 && i.repoDigests.length === 0)).toBe(true);
    expect(expected.cri.some((i) => i.repoTags.length === 0 && i.repoDigests.length === 1)).toBe(true);
    expect(expected.cri.find((i) => i.repoTags.includes("example.com/edge/multi:1.0"))).toBeDefined();
    expect(expected.ctr["moby"]!.some((r) => r.name.startsWith("moby-dangling@"))).toBe(true);
  });

  test("a multi-platform index is followed to this host's manifest, and its size counts the index", () => {
    const multi = expected.cri.find((i) => i.repoTags.includes("example.com/edge/multi:1.0"))!;
    const r = byId(store().store.list(), multi.id)!;
    expect(r.platform).toMatchObject(amd64);
    const index = expected.ctr["k8s.io"]!.find((x) => x.name === "example.com/edge/multi:1.0")!.target;
    const indexSize = readFileSync(join(ROOT, "io.containerd.content.v1.content/blobs/sha256", index.slice(7))).length;
    expect(r.size).toBeGreaterThan(indexSize);
    expect(r.size).toBe(multi.size);
  });

  test("an index entry is chosen by containerd 1.6's matcher: 386 runs on amd64, amd64/v2 does not, no platform comes last", () => {
    const M = "application/vnd.oci.image.manifest.v1+json";
    const e = (architecture: string | undefined, variant?: string, os = "linux") => ({
      mediaType: M,
      platform: architecture === undefined ? undefined : { os, architecture, variant },
      name: `${os}/${architecture}/${variant ?? ""}`,
    });
    const pick = (entries: ReturnType<typeof e>[], host: Platform) => platformEntries(entries, host).map((x) => x.name);
    expect(pick([e("386"), e("arm64")], amd64)).toEqual(["linux/386/"]);
    expect(pick([e("386"), e("amd64")], amd64)).toEqual(["linux/amd64/", "linux/386/"]);
    expect(pick([e("amd64", "v2")], amd64)).toEqual([]); // 1.6 normalizes only v1 away
    expect(pick([e("x86_64", "v1")], amd64)).toEqual(["linux/x86_64/v1"]);
    expect(pick([e(undefined), e("amd64")], amd64)).toEqual(["linux/amd64/", "linux/undefined/"]);
    expect(pick([e("unknown", undefined, "unknown"), e("amd64")], amd64)).toEqual(["linux/amd64/"]);
    const arm64: Platform = { os: "linux", architecture: "arm64" };
    expect(pick([e("arm", "v7"), e("arm64", "v8"), e("arm", "v5")], arm64)).toEqual(["linux/arm64/v8", "linux/arm/v7", "linux/arm/v5"]);
    expect(pick([e("aarch64")], arm64)).toEqual(["linux/aarch64/"]);

    // Through the store: an index holding only a 386 manifest is listed on amd64, as containerd lists it.
    const root = tempDir();
    const blobs = join(root, "io.containerd.content.v1.content/blobs/sha256");
    mkdirSync(blobs, { recursive: true });
    mkdirSync(join(root, "io.containerd.metadata.v1.bolt"));
    const put = (data: string) => {
      const hex = createHash("sha256").update(data).digest("hex");
      writeFileSync(join(blobs, hex), data);
      return { digest: `sha256:${hex}`, size: Buffer.byteLength(data) };
    };
    const config = put(JSON.stringify({ architecture: "386", os: "linux", config: { User: "old" }, rootfs: { type: "layers", diff_ids: [] } }));
    const manifest = put(JSON.stringify({ schemaVersion: 2, mediaType: M, config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers: [] }));
    const index = put(
      JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [{ mediaType: M, ...manifest, platform: { os: "linux", architecture: "386" } }] }),
    );
    const images: Tree = new Map([["example.com/old/i386:1", imageRecord({ ...index, mediaType: "application/vnd.oci.image.index.v1+json" })]]);
    writeFileSync(join(root, "io.containerd.metadata.v1.bolt/meta.db"), writeBolt(new Map([["v1", new Map([["k8s.io", new Map([["images", images]])]])]])).file);
    const records = store({ root }).store.list();
    expect(records.map((r) => [r.id, r.user, r.size])).toEqual([[config.digest, "old", index.size + manifest.size + config.size]]);
  });

  test("containerd's sha256:<id> names are not tags; name@digest names are repo digests", () => {
    const records = store().store.list();
    for (const r of records) {
      for (const t of r.repoTags) expect(t).not.toMatch(/^sha256:/);
    }
    const gamma = records.find((r) => r.repoTags.includes("example.com/edge/gamma:1.0"))!;
    expect(gamma.repoDigests).toEqual([expect.stringMatching(/^example\.com\/edge\/gamma@sha256:[a-f0-9]{64}$/)]);
    expect(classifyName("sha256:" + "a".repeat(64))).toEqual({});
    expect(classifyName("a".repeat(64))).toEqual({});
    expect(classifyName("busybox")).toEqual({}); // a repository without tag is neither (containerd drops it too)
    expect(classifyName("busybox:1")).toEqual({ tag: "docker.io/library/busybox:1" });
    // containerd lists name:tag@digest as a repo digest; imagelet's repo digests are repository@digest.
    expect(classifyName(`busybox:1@sha256:${"b".repeat(64)}`)).toEqual({ digest: `docker.io/library/busybox@sha256:${"b".repeat(64)}` });
    expect(classifyName("Not A Name")).toEqual({});
  });

  test("the pinned label makes the record pinned; other images are not", () => {
    const records = store().store.list();
    const alpha = records.find((r) => r.repoTags.includes("example.com/edge/alpha:1.0"))!;
    expect(alpha.pinned).toBe(true);
    const beta = records.find((r) => r.repoTags.includes("example.com/edge/beta:2.0"))!;
    expect(beta.pinned).toBeUndefined();
  });

  test("images whose config or manifest blob was removed are skipped, logged once with the blob's path", () => {
    const { store: s, log } = store();
    s.list();
    s.list();
    const names = expected.ctr["k8s.io"]!.map((r) => r.name);
    expect(names).toContain("example.com/edge/noconfig:1.0");
    const config = warned(log, "noconfig");
    expect(config).toHaveLength(1);
    expect(String(config[0]!.fields?.path)).toEndWith(expected.removed.config.slice(7));
    const manifest = warned(log, "nomanifest");
    expect(manifest).toHaveLength(1);
    expect(String(manifest[0]!.fields?.path)).toEndWith(expected.removed.manifest.slice(7));
    expect(manifest[0]!.msg).toContain(`manifest ${expected.removed.manifest}`);
  });

  test("an unchanged store answers with the same array (the registry then does nothing)", () => {
    const { store: s } = store();
    const first = s.list();
    expect(s.list()).toBe(first);
  });

  test("verbose status reads the config again", () => {
    const { store: s } = store();
    const beta = expected.cri.find((i) => i.user === "1000:1000")!;
    s.list();
    const status = s.status(beta.id)!;
    expect((status.config as { config: { User: string } }).config.User).toBe("1000:1000");
    expect(s.status("sha256:" + "0".repeat(64))).toBeUndefined();
  });
});

describe("namespaces", () => {
  test("each namespace has its own images; one that does not exist has none, said once", () => {
    const other = store({ namespace: "other" }).store.list();
    expect(other.map((r) => r.repoTags)).toEqual([["example.com/other/only:1.0"]]);
    const notices: (string | undefined)[] = [];
    const { store: none, log } = store({ namespace: "nothing-here", notice: (n) => void notices.push(n) });
    expect(none.list()).toEqual([]);
    none.list();
    expect(warned(log, "does not exist")).toHaveLength(1);
    expect(notices.at(-1)).toBe(`namespace nothing-here does not exist in ${ROOT} (yet); it has k8s.io, moby, other`);
  });

  test("Docker 29's moby namespace; its moby-dangling@ names can be set aside", () => {
    const plain = store({ namespace: "moby" }).store.list();
    expect(plain.flatMap((r) => r.repoTags)).toEqual(["example.com/edge/beta:2.0"]);
    expect(plain.flatMap((r) => r.repoDigests)).toEqual([expect.stringMatching(/^docker\.io\/library\/moby-dangling@sha256:/)]);
    const docker = store({ namespace: "moby", ignoreName: (n) => n.startsWith("moby-dangling@") }).store.list();
    expect(docker).toHaveLength(2);
    expect(docker.flatMap((r) => r.repoTags)).toEqual(["example.com/edge/beta:2.0"]);
    expect(docker.flatMap((r) => r.repoDigests)).toEqual([]);
  });

  test("the namespace option is checked", () => {
    const ctx: BackendContext = { name: "c", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice: () => {} };
    expect(() => containerd.create({ path: "/x", namespace: "bad ns" }, ctx)).toThrow(/namespace/);
    expect(() => containerd.create({ path: "/x", namespace: "../k8s" }, ctx)).toThrow(/namespace/);
    expect((containerd.create({ path: "/x" }, ctx) as ContainerdStore).opts.namespace).toBe("k8s.io");
  });

  test("a root without meta.db is a problem naming the file", () => {
    const { store: s } = store({ root: tempDir() });
    expect(() => s.list()).toThrow(StoreProblem);
    expect(() => s.list()).toThrow(/meta\.db/);
  });
});

describe("bbolt values", () => {
  test("varints and times as Go writes them", () => {
    for (const n of [0, 1, -1, -64, 63, 64, 378, 1 << 20, 2 ** 40, 2 ** 52, -(2 ** 52)]) expect(readVarint(varint(n))).toBe(n);
    expect(readVarint(Buffer.from([0xf4, 0x05]))).toBe(378); // protobuf varint, as in containerd's bolt values
    expect(readVarint(Buffer.from([0x80]))).toBeUndefined();
    expect(readGoTime(goTime("2024-01-02T03:04:05.000Z"))).toBe("2024-01-02T03:04:05Z");
    expect(readGoTime(Buffer.from("nope"))).toBeUndefined();
  });

  test("FNV-64a", () => {
    // Go: fnv.New64a().Write([]byte("a")).Sum64() == 0xaf63dc4c8601ec8c
    expect(fnv64a(Buffer.from("a"))).toBe(0xaf63dc4c8601ec8cn);
    expect(fnv64a(Buffer.alloc(0))).toBe(0xcbf29ce484222325n);
  });
});

/** A containerd root of crafted content: one real config and manifest per image, and a crafted meta.db. */
function craftedRoot(n: number, opts: { perLeaf?: number; bigLabel?: boolean } = {}) {
  const root = tempDir();
  const blobs = join(root, "io.containerd.content.v1.content/blobs/sha256");
  mkdirSync(blobs, { recursive: true });
  mkdirSync(join(root, "io.containerd.metadata.v1.bolt"), { recursive: true });
  const put = (data: string) => {
    const hex = createHash("sha256").update(data).digest("hex");
    writeFileSync(join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: Buffer.byteLength(data) };
  };
  const images: Tree = new Map();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const config = put(JSON.stringify({ architecture: "amd64", os: "linux", config: { User: `u${i}` }, rootfs: { type: "layers", diff_ids: [] } }));
    const manifest = put(
      JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers: [] }),
    );
    ids.push(config.digest);
    const labels: Record<string, string> = opts.bigLabel && i === 0 ? { big: "x".repeat(10000) } : {};
    images.set(`example.com/crafted/img${String(i).padStart(4, "0")}:1`, imageRecord({ ...manifest, mediaType: "application/vnd.oci.image.manifest.v1+json" }, labels));
  }
  const tree: Tree = new Map([["v1", new Map<string, Buffer | Tree>([["version", varint(3)], ["k8s.io", new Map([["images", images]])]])]]);
  const written = writeBolt(tree, { perLeaf: opts.perLeaf });
  const meta = join(root, "io.containerd.metadata.v1.bolt/meta.db");
  writeFileSync(meta, written.file);
  return { root, meta, ids, written };
}

describe("bbolt reader on crafted files", () => {
  test("branch pages, overflow pages, inline buckets: every image is read", () => {
    const { root, ids, written } = craftedRoot(60, { perLeaf: 7, bigLabel: true });
    expect(written.pages.some((p) => p.kind === "branch")).toBe(true);
    expect(written.pages.some((p) => p.overflow > 0)).toBe(true);
    const records = store({ root }).store.list();
    expect(records.map((r) => r.id).sort()).toEqual(ids.slice().sort());
    expect(records.find((r) => r.repoTags[0] === "example.com/crafted/img0007:1")?.user).toBe("u7");
    // These configs have no `created`: the image record's createdat stands in.
    expect(records[0]!.created).toBe("2024-01-02T03:04:05Z");
  });

  function damaged(damage: (file: Buffer, w: ReturnType<typeof craftedRoot>["written"]) => Buffer | void) {
    const c = craftedRoot(30, { perLeaf: 5 });
    const file = readFileSync(c.meta);
    const out = damage(file, c.written) ?? file;
    writeFileSync(c.meta, out);
    return c;
  }
  const branchOf = (w: ReturnType<typeof craftedRoot>["written"]) => w.pages.find((p) => p.kind === "branch" && p.bucket.endsWith("/images"))!;

  test("a page loop is corruption, not a hang", () => {
    const { meta, root } = damaged((file, w) => {
      const b = branchOf(w);
      // The branch's second child points back at the branch itself.
      file.writeBigUInt64LE(BigInt(b.id), b.id * w.pageSize + 16 + 16 + 8);
    });
    expect(() => readImages(meta, "k8s.io")).toThrow(/page loop/);
    const s = store({ root }).store;
    expect(() => s.list()).toThrow(StoreProblem);
    try {
      s.list();
    } catch (e) {
      expect((e as StoreProblem).path).toBe(meta);
    }
  });

  test("an out-of-range page id, a page that names another id, a non-page", () => {
    const outOfRange = damaged((file, w) => void file.writeBigUInt64LE(1_000_000n, branchOf(w).id * w.pageSize + 16 + 8));
    expect(() => readImages(outOfRange.meta, "k8s.io")).toThrow(/out of range/);
    const wrongId = damaged((file, w) => {
      const leaf = w.pages.find((p) => p.kind === "leaf" && p.bucket.endsWith("/images"))!;
      file.writeBigUInt64LE(999n, leaf.id * w.pageSize);
    });
    expect(() => readImages(wrongId.meta, "k8s.io")).toThrow(/says it is page 999/);
    const freelist = damaged((file, w) => void file.writeBigUInt64LE(2n, branchOf(w).id * w.pageSize + 16 + 8));
    expect(() => readImages(freelist.meta, "k8s.io")).toThrow(/out of range|neither a branch nor a leaf/);
  });

  test("a truncated file, and elements that point outside their page", () => {
    const truncated = damaged((file, w) => file.subarray(0, w.rootPage * w.pageSize + 100));
    expect(() => readImages(truncated.meta, "k8s.io")).toThrow(/past the end of the file/);
    const outside = damaged((file, w) => {
      const leaf = w.pages.find((p) => p.kind === "leaf" && p.bucket.endsWith("/images"))!;
      file.writeUInt32LE(0xffff, leaf.id * w.pageSize + 16 + 8); // ksize of element 0
    });
    expect(() => readImages(outside.meta, "k8s.io")).toThrow(/outside its page/);
  });

  test("a damaged overflow count in a large file is refused, not read into memory", () => {
    const pages = 40_000; // 160 MiB, sparse
    const { meta } = damaged((file, w) => {
      const leaf = w.pages.find((p) => p.kind === "leaf" && p.bucket.endsWith("/images"))!;
      file.writeUInt32LE(30_000, leaf.id * w.pageSize + 12); // overflow: 117 MiB more
      for (const slot of [0, 1]) {
        file.writeBigUInt64LE(BigInt(pages), slot * w.pageSize + 16 + 40); // the high-water mark
        resealMeta(file, w.pageSize, slot);
      }
    });
    truncateSync(meta, pages * 4096);
    const rss = process.memoryUsage().rss;
    expect(() => readImages(meta, "k8s.io")).toThrow(/spans 122884096 bytes with its overflow/);
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
  });

  test("pages shared between buckets are read at most a few times the file's pages, whatever the meta's high-water mark says", () => {
    // Every image record's bucket header points at the images bucket's own root: each image would
    // walk the whole images tree (N × pages reads). A high-water mark far past the file (checksum
    // intact) must not lift the bound.
    const c = craftedRoot(600, { perLeaf: 2 });
    const file = readFileSync(c.meta);
    const ps = c.written.pageSize;
    const elements = (id: number) => {
      const at = id * ps;
      return Array.from({ length: file.readUInt16LE(at + 10) }, (_, i) => {
        const e = at + 16 + i * 16;
        const start = e + file.readUInt32LE(e + 4);
        const ksize = file.readUInt32LE(e + 8);
        return { flags: file.readUInt32LE(e), key: file.subarray(start, start + ksize).toString(), value: start + ksize };
      });
    };
    const k8sLeaf = c.written.pages.find((p) => p.kind === "leaf" && p.bucket === "/v1/k8s.io")!;
    const imagesRoot = file.readBigUInt64LE(elements(k8sLeaf.id).find((e) => e.key === "images")!.value);
    for (const leaf of c.written.pages.filter((p) => p.kind === "leaf" && p.bucket === "/v1/k8s.io/images")) {
      for (const e of elements(leaf.id)) if (e.flags === 1) file.writeBigUInt64LE(imagesRoot, e.value);
    }
    for (const slot of [0, 1]) {
      file.writeBigUInt64LE(1n << 40n, slot * ps + 16 + 40);
      resealMeta(file, ps, slot);
    }
    writeFileSync(c.meta, file);
    const t0 = performance.now();
    expect(() => readImages(c.meta, "k8s.io")).toThrow(/more page reads than the file has pages/);
    expect(performance.now() - t0).toBeLessThan(500);
  });

  test("not a bbolt file; an unknown format version; both meta pages bad; one bad meta falls back to the other", () => {
    const text = damaged(() => Buffer.from("this is not a database\n".repeat(500)));
    expect(() => readImages(text.meta, "k8s.io")).toThrow(/no bbolt meta page/);
    const empty = damaged(() => Buffer.alloc(0));
    expect(() => readImages(empty.meta, "k8s.io")).toThrow(BoltError);
    const v3 = damaged((file, w) => {
      for (const slot of [0, 1]) {
        file.writeUInt32LE(3, slot * w.pageSize + 16 + 4);
        resealMeta(file, w.pageSize, slot);
      }
    });
    expect(() => readImages(v3.meta, "k8s.io")).toThrow(/format version 3/);
    const both = damaged((file, w) => {
      file[16 + 20]! ^= 0xff;
      file[w.pageSize + 16 + 20]! ^= 0xff;
    });
    expect(() => readImages(both.meta, "k8s.io")).toThrow(/both bbolt meta pages are invalid/);
    // The newer meta (slot 1, txid 10) torn: the older one names the same tree here.
    const one = damaged((file, w) => void (file[w.pageSize + 16 + 20]! ^= 0xff));
    const fd = openSync(one.meta, "r");
    try {
      expect(readMeta(fd, readFileSync(one.meta).length).slot).toBe(0);
    } finally {
      closeSync(fd);
    }
    expect(readImages(one.meta, "k8s.io").images).toHaveLength(30);
  });

  test("a bbolt file without containerd's v1 bucket is an unknown schema", () => {
    const root = tempDir();
    mkdirSync(join(root, "io.containerd.metadata.v1.bolt"));
    const meta = join(root, "io.containerd.metadata.v1.bolt/meta.db");
    writeFileSync(meta, writeBolt(new Map([["v2", new Map([["x", Buffer.from("y")]])]])).file);
    expect(() => readImages(meta, "k8s.io")).toThrow(/no v1 bucket.*"v2"/);
    expect(() => store({ root }).store.list()).toThrow(/not containerd's metadata schema v1/);
  });

  test("a commit during the read makes it read again; one during every read gives up", () => {
    const { meta, written } = craftedRoot(3);
    let calls = 0;
    const bump = () => {
      // What a commit does last: a new meta page with a higher txid, in the other slot.
      const file = readFileSync(meta);
      const m0 = 16;
      file.writeBigUInt64LE(file.readBigUInt64LE(m0 + 48) + 2n, m0 + 48);
      resealMeta(file, written.pageSize, 0);
      writeFileSync(meta, file);
    };
    const { meta: seen } = readSnapshot(meta, () => {
      if (calls++ === 0) bump();
    });
    expect(calls).toBe(2);
    expect(seen.txid).toBe(11n);
    expect(() => readSnapshot(meta, () => bump(), 3)).toThrow(/during each of 3 reads/);
    // A parse error while the file changed is a retry too, not a failure.
    let tries = 0;
    readSnapshot(meta, () => {
      if (tries++ === 0) {
        bump();
        throw new BoltError("corrupt", "torn read");
      }
    });
    expect(tries).toBe(2);
  });

  test("a long read stops at the first look at the metas after a commit, not at its end", () => {
    const { meta, written } = craftedRoot(700, { perLeaf: 2 });
    let attempt = 0;
    const seen: number[] = [];
    readSnapshot(meta, (root) => {
      attempt++;
      let n = 0;
      const images = root.bucket("v1")!.bucket("k8s.io")!.bucket("images")!;
      images.forEach((_k, v) => {
        if (attempt === 1 && n === 5) {
          const file = readFileSync(meta);
          file.writeBigUInt64LE(file.readBigUInt64LE(16 + 48) + 2n, 16 + 48);
          resealMeta(file, written.pageSize, 0);
          writeFileSync(meta, file);
        }
        n++;
        (v as { forEach(fn: () => void): void }).forEach(() => {}); // each image bucket is a page of its own
      });
      seen.push(n);
    });
    expect(seen).toHaveLength(1); // the first attempt threw before finishing
    expect(seen[0]).toBe(700);
    expect(attempt).toBe(2);
  });

  test("a file that grew after its size was taken (a commit between the stat and the meta read) is read whole", () => {
    // bbolt grows meta.db and writes the new pages before the meta page naming them: a size taken
    // before that meta was read is short of its pages, and the file is not truncated for it.
    const { meta, ids } = craftedRoot(40, { perLeaf: 3 });
    const fd = openSync(meta, "r");
    try {
      const m = readMeta(fd, fstatSync(fd).size);
      const stale = new BoltSnapshot(fd, 2 * m.pageSize, m);
      const images = stale.root().bucket("v1")!.bucket("k8s.io")!.bucket("images")!;
      expect(images.entries().size).toBe(ids.length);
    } finally {
      closeSync(fd);
    }
    // A file that really is short stays an error.
    truncateSync(meta, 3 * 4096);
    expect(() => readImages(meta, "k8s.io")).toThrow(/past the end of the file/);
  });

  test("the crafted writer agrees with containerd's real file on what a reader sees", () => {
    // The fixture's meta.db, written by bbolt itself, reads without a problem.
    const snap = readImages(join(ROOT, "io.containerd.metadata.v1.bolt/meta.db"), "k8s.io");
    expect(snap.dbVersion).toBe(3); // containerd 1.6's v1 revision
    expect(snap.images.map((i) => i.name)).toEqual(expected.ctr["k8s.io"]!.map((r) => r.name));
    for (const i of snap.images) {
      expect(i.target?.digest).toBe(expected.ctr["k8s.io"]!.find((r) => r.name === i.name)!.target);
      expect(readGoTime(i.createdAt!)).toMatch(/^20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    }
  });
});

describe("content rules", () => {
  const blobFile = (root: string, digest: string) => join(root, "io.containerd.content.v1.content/blobs/sha256", digest.slice(7));
  function configOf(root: string, i = 0): string {
    const snap = readImages(join(root, "io.containerd.metadata.v1.bolt/meta.db"), "k8s.io");
    const manifest = JSON.parse(readFileSync(blobFile(root, snap.images[i]!.target!.digest), "utf8"));
    return manifest.config.digest;
  }

  test("a blob that does not match its digest, a FIFO, a symlink out of the store: skipped and logged, the rest served", () => {
    const { root, ids } = craftedRoot(4);
    const [a, b, c] = [0, 1, 2].map((i) => configOf(root, i));
    writeFileSync(blobFile(root, a!), "{}"); // not its digest
    rmSync(blobFile(root, b!));
    execFileSync("mkfifo", [blobFile(root, b!)]); // would block a plain read forever
    const outside = join(tempDir(), "outside.json");
    writeFileSync(outside, readFileSync(blobFile(root, c!)));
    rmSync(blobFile(root, c!));
    symlinkSync(outside, blobFile(root, c!));
    const { store: s, log } = store({ root });
    expect(s.list().map((r) => r.id)).toEqual([ids[3]!]);
    expect(warned(log, "does not match its digest")).toHaveLength(1);
    expect(warned(log, "resolves outside the store")).toHaveLength(1);
    expect(log.lines.filter((l) => l.level === "warn" && String(l.fields?.path) === blobFile(root, b!))).toHaveLength(1);
  });

  test("a symlinked blob inside the store is read; a blob directory that leads out of it is not", () => {
    const { root, ids } = craftedRoot(2);
    const a = configOf(root, 0);
    const moved = join(root, "io.containerd.content.v1.content", "elsewhere.json");
    writeFileSync(moved, readFileSync(blobFile(root, a)));
    rmSync(blobFile(root, a));
    symlinkSync(moved, blobFile(root, a));
    expect(store({ root }).store.list().map((r) => r.id).sort()).toEqual(ids.slice().sort());
    const sha = join(root, "io.containerd.content.v1.content/blobs/sha256");
    const away = join(tempDir(), "sha256");
    renameSync(sha, away);
    symlinkSync(away, sha);
    const { store: s, log } = store({ root });
    expect(s.list()).toEqual([]);
    expect(warned(log, "resolves outside the store").length).toBeGreaterThan(0);
  });
});

describe("changes", () => {
  test("a copied root follows a truncation and a repair: problem, then the images again", () => {
    const root = join(tempDir(), "root");
    cpSync(ROOT, root, { recursive: true });
    const { store: s } = store({ root });
    const good = s.list();
    expect(good.length).toBe(expected.cri.length);
    const meta = join(root, "io.containerd.metadata.v1.bolt/meta.db");
    const bytes = readFileSync(meta);
    truncateSync(meta, 4096 * 3);
    expect(() => s.list()).toThrow(/meta\.db cannot be read/);
    writeFileSync(meta, bytes);
    expect(s.list().map((r) => r.id).sort()).toEqual(good.map((r) => r.id).sort());
  });
  test("a meta.db replaced by another with the same txid (a restored or copied file) is read again", () => {
    const big = craftedRoot(5);
    const small = craftedRoot(3); // the same blobs for its three images (the writer is deterministic)
    const { store: s } = store({ root: big.root });
    expect(s.list()).toHaveLength(5);
    const fd = openSync(small.meta, "r");
    const smallTxid = readMeta(fd, fstatSync(fd).size).txid;
    closeSync(fd);
    const fd2 = openSync(big.meta, "r");
    expect(readMeta(fd2, fstatSync(fd2).size).txid).toBe(smallTxid);
    closeSync(fd2);
    renameSync(small.meta, big.meta);
    expect(s.list().map((r) => r.id).sort()).toEqual(small.ids.slice().sort());
  });
});

describe("a meta.db that is written all the time", () => {
  test("a change is visible within a second while writes come faster than the registry's debounce", async () => {
    // containerd commits for leases, containers and content as well as images: on a busy node meta.db
    // is written every few ms. Each write is an inotify event; the registry's debounce (50 ms) restarts
    // on every notification, so without its longest wait (MAX_DEBOUNCE_WAIT_MS) it would never fire.
    const { BackendRegistry } = await import("../../src/registry/registry");
    const big = craftedRoot(4);
    const small = craftedRoot(3); // the same blobs for its three images
    const smallFile = readFileSync(small.meta);
    const bigFile = readFileSync(big.meta);
    writeFileSync(big.meta, smallFile);
    const { store: s, log } = store({ root: big.root });
    let lists = 0;
    const list = s.list.bind(s);
    s.list = () => (lists++, list());
    const registry = new BackendRegistry([{ name: "ctd", type: "containerd", backend: s as never, timeoutMs: 5000 }], { log });
    await registry.loadAll();
    registry.startWatching();
    const listsBefore = lists;
    const started = performance.now();
    const newest = big.ids.find((id) => !small.ids.includes(id))!;
    expect(registry.view.images.some((i) => i.id === newest)).toBe(false);
    let file = smallFile;
    let writes = 0;
    const writer = setInterval(() => {
      writeFileSync(big.meta, file); // in place, as bbolt writes
      writes++;
    }, 5);
    try {
      await Bun.sleep(300);
      file = bigFile;
      const t0 = performance.now();
      while (!registry.view.images.some((i) => i.id === newest) && performance.now() - t0 < 2000) await Bun.sleep(10);
      const visibleMs = performance.now() - t0;
      expect(writes).toBeGreaterThan(50);
      expect(visibleMs).toBeLessThan(1000);
      // And not a read per write: at most about one per 200 ms while the writes go on.
      await Bun.sleep(400);
      expect(lists - listsBefore).toBeLessThanOrEqual(Math.ceil((performance.now() - started) / 200) + 2);
    } finally {
      clearInterval(writer);
      await registry.close();
    }
  });
});

describe("Docker 29 (the docker backend, in containerd image store mode)", () => {
  test("serves <docker root>/containerd/daemon, namespace moby, and says so", async () => {
    const { DockerStore } = await import("../../src/backends/docker/index");
    const root = join(tempDir(), "docker");
    cpSync(ROOT, join(root, "containerd", "daemon"), { recursive: true });
    mkdirSync(join(root, "image"));
    const notices: (string | undefined)[] = [];
    const log = memoryLogger();
    const ctx: BackendContext = { name: "engine", log, baseDir: "/", platform: amd64, setNotice: (n) => void notices.push(n) };
    const docker = new DockerStore({ root }, ctx);
    const records = await docker.list();
    expect(records.flatMap((r) => r.repoTags)).toEqual(["example.com/edge/beta:2.0"]);
    expect(records).toHaveLength(2); // and the dangling one, untagged
    expect(records.flatMap((r) => r.repoDigests)).toEqual([]);
    expect(notices.at(-1)).toContain("read through the containerd backend");
    expect(notices.at(-1)).toContain("namespace moby");
    const beta = records.find((r) => r.repoTags.length > 0)!;
    expect((docker.status(beta.id)?.config as { config: { User: string } }).config.User).toBe("1000:1000");
  });
});

describe("without a config file", () => {
  test("containerd's, k3s's and MicroK8s's roots are well-known stores", async () => {
    const { defaultConfig } = await import("../../src/config/config");
    const roots = ["/var/lib/containerd", "/var/lib/rancher/k3s/agent/containerd", "/var/snap/microk8s/common/var/lib/containerd"];
    const backends = defaultConfig((p) => roots.includes(p)).backends;
    expect(backends.map((b) => [b.type, b.name, b.options.path])).toEqual([
      ["containerd", "containerd", roots[0]],
      ["containerd", "k3s", roots[1]],
      ["containerd", "microk8s", roots[2]],
    ]);
  });
});
