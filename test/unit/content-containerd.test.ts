// The content hook of the containerd backend (what the mirror serves), on the
// root containerd 1.6 wrote (scripts/make-fixtures-containerd): each image's
// target is its meta.db target; it and everything it reaches that the
// content store has are served byte for byte from the blob files.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BackendContext, Platform } from "../../src/backend/contract";
import { ContainerdStore } from "../../src/backends/containerd/index";
import { MALFORMED_DIGESTS, bodyBytes, pullAll, sha256 } from "./content-helpers";
import { memoryLogger } from "./helpers";

const FIXTURE = resolve(import.meta.dir, "../fixtures/containerd");
const ROOT = join(FIXTURE, "root");
const BLOBS = "io.containerd.content.v1.content/blobs/sha256";
const expected: { ctr: Record<string, { name: string; target: string }[]>; removed: { config: string; manifest: string } } = JSON.parse(
  readFileSync(join(FIXTURE, "expected.json"), "utf8"),
);
const amd64: Platform = { os: "linux", architecture: "amd64" };

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function store(root = ROOT, namespace = "k8s.io") {
  const log = memoryLogger();
  const ctx: BackendContext = { name: "ctd", log, baseDir: "/", platform: amd64, setNotice: () => {} };
  return { store: new ContainerdStore({ root, namespace }, ctx), log };
}

const has = (root: string, digest: string) => existsSync(join(root, BLOBS, digest.slice(7)));

/** The digests an image's target reaches that the content store lacks (other platforms containerd never fetched). */
function absent(root: string, target: string): Set<string> {
  const out = new Set<string>();
  const walk = (digest: string) => {
    if (!has(root, digest)) return void out.add(digest);
    let doc;
    try {
      doc = JSON.parse(readFileSync(join(root, BLOBS, digest.slice(7)), "utf8"));
    } catch {
      return; // a layer
    }
    // An index, or a manifest (a config has a `config` too, with no digest).
    const children = doc.manifests ?? (Array.isArray(doc.layers) ? [doc.config, ...doc.layers] : []);
    for (const c of children) walk(c.digest);
  };
  walk(target);
  return out;
}

describe("every image containerd lists is served as containerd keeps it", () => {
  for (const namespace of ["k8s.io", "moby"]) {
    test(`${namespace}: the target is a name's meta.db target, and all it reaches that the store has hashes to its digest`, async () => {
      const { store: s } = store(ROOT, namespace);
      const records = s.list();
      expect(records.length).toBeGreaterThan(0);
      const targets = new Set(expected.ctr[namespace]!.map((r) => r.target));
      for (const r of records) {
        expect(r.target).toBeDefined();
        expect(targets.has(r.target!.digest)).toBe(true);
        const served = await pullAll((id, d) => s.content(id, d), r.id, r.target!, absent(ROOT, r.target!.digest));
        expect(served).toContain(r.id);
        expect(served).toContain(r.target!.digest);
        for (const d of served) expect(s.content(r.id, d)!.file).toEqual({ path: join(ROOT, BLOBS, d.slice(7)), offset: 0 });
      }
    });
  }

  test("the multi-platform image is served by its index, and what the store has of other platforms is served too", async () => {
    const { store: s } = store();
    const multi = s.list().find((r) => r.repoTags.includes("example.com/edge/multi:1.0"))!;
    expect(multi.target!.mediaType).toMatch(/index|manifest\.list/);
    const index = JSON.parse((await bodyBytes(s.content(multi.id, multi.target!.digest)!)).toString("utf8"));
    const children = index.manifests.map((m: { digest: string }) => m.digest) as string[];
    expect(children.length).toBeGreaterThan(1);
    for (const c of children) expect(s.content(multi.id, c) !== undefined).toBe(has(ROOT, c));
    expect(children.filter((c) => has(ROOT, c)).length).toBeGreaterThanOrEqual(1);
  });
});

describe("only what an image reaches", () => {
  test("another image's blobs, images not listed, and malformed digests give undefined", async () => {
    const { store: s } = store();
    const records = s.list();
    const [a, b] = records;
    expect(s.content(a!.id, b!.id)).toBeUndefined();
    expect(s.content(a!.id, b!.target!.digest)).toBeUndefined();
    for (const bad of MALFORMED_DIGESTS) expect(s.content(a!.id, bad)).toBeUndefined();
  });

  test("images whose config or manifest blob was removed are not served, and nothing throws", () => {
    const { store: s } = store();
    s.list();
    const noconfig = expected.ctr["k8s.io"]!.find((r) => r.name === "example.com/edge/noconfig:1.0")!;
    expect(s.content(expected.removed.config, noconfig.target)).toBeUndefined();
    expect(s.content(expected.removed.config, expected.removed.config)).toBeUndefined();
    const nomanifest = expected.ctr["k8s.io"]!.find((r) => r.name === "example.com/edge/nomanifest:1.0")!;
    for (const r of s.list()) expect(s.content(r.id, nomanifest.target)).toBeUndefined();
  });

  test("a layer removed after the listing gives undefined, logged once with its path; the rest is still served", async () => {
    const dir = mkdtempSync(join(tmpdir(), "imagelet-content-ctd-"));
    temps.push(dir);
    const root = join(dir, "root");
    cpSync(ROOT, root, { recursive: true });
    const { store: s, log } = store(root);
    const r = s.list().find((x) => x.repoTags.includes("example.com/edge/beta:2.0"))!;
    const served = await pullAll((id, d) => s.content(id, d), r.id, r.target!, absent(root, r.target!.digest));
    const layer = served.find((d) => d !== r.id && d !== r.target!.digest && !readFileSync(join(root, BLOBS, d.slice(7))).subarray(0, 1).equals(Buffer.from("{")))!;
    expect(layer).toBeDefined();
    unlinkSync(join(root, BLOBS, layer.slice(7)));
    expect(s.content(r.id, layer)).toBeUndefined();
    expect(s.content(r.id, layer)).toBeUndefined();
    const warns = log.lines.filter((l) => l.level === "warn" && String(l.fields?.path).endsWith(layer.slice(7)));
    expect(warns).toHaveLength(1);
    expect(sha256(await bodyBytes(s.content(r.id, r.id)!))).toBe(r.id);
  });
});
