// The content hook of the OCI layout backend (what the mirror serves), on the
// fixtures made by umoci, skopeo and buildah: every image's target and all it
// reaches are served byte for byte from the blob files, and nothing else is.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BackendContext, Platform } from "../../src/backend/contract";
import { OciLayoutStore } from "../../src/backends/oci-layout/index";
import { MALFORMED_DIGESTS, bodyBytes, pullAll, sha256 } from "./content-helpers";
import { memoryLogger } from "./helpers";

const FIXTURES = resolve(import.meta.dir, "../fixtures");
const LAYOUTS = ["oci-umoci", "oci-multi", "oci-skopeo-noref", "oci-artifacts"];
const amd64: Platform = { os: "linux", architecture: "amd64" };

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function store(path: string) {
  const log = memoryLogger();
  const ctx: BackendContext = { name: "test", log, baseDir: "/", platform: amd64, setNotice() {} };
  return { store: new OciLayoutStore(path, undefined, ctx), log };
}

function copy(layout: string): string {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-content-"));
  temps.push(dir);
  cpSync(join(FIXTURES, layout), join(dir, layout), { recursive: true });
  return join(dir, layout);
}

const blobsOf = (root: string) => readdirSync(join(root, "blobs", "sha256")).map((h) => `sha256:${h}`);

describe("every image of every fixture layout is served whole", () => {
  for (const layout of LAYOUTS) {
    test(`${layout}: the target is the index.json entry as stored, and everything it reaches hashes to its digest`, async () => {
      const root = join(FIXTURES, layout);
      const { store: s, log } = store(root);
      const records = s.list();
      expect(records.length).toBeGreaterThan(0);
      const entries = JSON.parse(readFileSync(join(root, "index.json"), "utf8")).manifests as { digest: string; mediaType: string; size: number }[];
      for (const r of records) {
        expect(r.target).toBeDefined();
        const entry = entries.find((e) => e.digest === r.target!.digest)!;
        expect(r.target).toEqual({ mediaType: entry.mediaType, digest: entry.digest, size: entry.size });
        const served = await pullAll((id, d) => s.content(id, d), r.id, r.target!);
        expect(served.length).toBeGreaterThanOrEqual(r.kind === "artifact" ? 2 : 3);
        // Every served body is the blob file itself, from its start: the mirror can send it as it is.
        for (const d of served) expect(s.content(r.id, d)!.file).toEqual({ path: join(root, "blobs", "sha256", d.slice(7)), offset: 0 });
      }
      expect(log.lines.filter((l) => l.level === "warn")).toEqual([]);
    });
  }

  test("oci-multi: the index reaches the other platform's manifest, config and layers too", async () => {
    const root = join(FIXTURES, "oci-multi");
    const { store: s } = store(root);
    const [r] = s.list();
    const served = await pullAll((id, d) => s.content(id, d), r!.id, r!.target!);
    // All seven blobs of the layout belong to this one multi-platform image.
    expect(served.sort()).toEqual(blobsOf(root).sort());
    expect(r!.target!.mediaType).toBe("application/vnd.oci.image.index.v1+json");
  });
});

describe("only what an image reaches", () => {
  test("a blob of another image in the same layout is not served under this one", async () => {
    const root = join(FIXTURES, "oci-umoci");
    const { store: s } = store(root);
    const [a, b] = s.list();
    const ofA = new Set(await pullAll((id, d) => s.content(id, d), a!.id, a!.target!));
    const ofB = new Set(await pullAll((id, d) => s.content(id, d), b!.id, b!.target!));
    const onlyB = [...ofB].filter((d) => !ofA.has(d));
    expect(onlyB.length).toBeGreaterThan(0);
    for (const d of onlyB) expect(s.content(a!.id, d)).toBeUndefined();
  });

  test("an image the layout does not list, and malformed digests, give undefined", () => {
    const root = join(FIXTURES, "oci-umoci");
    const { store: s } = store(root);
    const [a] = s.list();
    const blob = blobsOf(root)[0]!;
    expect(s.content(`sha256:${"0".repeat(64)}`, blob)).toBeUndefined();
    for (const bad of MALFORMED_DIGESTS) expect(s.content(a!.id, bad)).toBeUndefined();
  });

  test("a file region read from an offset is the blob's suffix", async () => {
    const root = join(FIXTURES, "oci-umoci");
    const { store: s } = store(root);
    const [a] = s.list();
    const body = s.content(a!.id, a!.target!.digest)!;
    const whole = await bodyBytes(body);
    expect((await bodyBytes(body, 100)).equals(whole.subarray(100))).toBe(true);
  });
});

describe("damaged layouts", () => {
  test("a layer deleted after the scan gives undefined, logged once with the path", async () => {
    const root = copy("oci-umoci");
    const { store: s, log } = store(root);
    const [a] = s.list();
    const manifest = JSON.parse(readFileSync(join(root, "blobs", "sha256", a!.target!.digest.slice(7)), "utf8"));
    const layer = manifest.layers[0].digest as string;
    unlinkSync(join(root, "blobs", "sha256", layer.slice(7)));
    expect(s.content(a!.id, layer)).toBeUndefined();
    expect(s.content(a!.id, layer)).toBeUndefined();
    const warns = log.lines.filter((l) => l.level === "warn");
    expect(warns.length).toBe(1);
    expect(warns[0]!.fields).toMatchObject({ backend: "test", path: join(root, "blobs", "sha256", layer.slice(7)) });
  });

  test("a blob replaced by a symlink out of the layout, or by content of another length, is not served", async () => {
    const root = copy("oci-umoci");
    const { store: s } = store(root);
    const [a] = s.list();
    const manifest = JSON.parse(readFileSync(join(root, "blobs", "sha256", a!.target!.digest.slice(7)), "utf8"));
    const [config, layer] = [manifest.config.digest as string, manifest.layers[0].digest as string];
    const outside = join(root, "..", "secret");
    writeFileSync(outside, "not for the mirror");
    unlinkSync(join(root, "blobs", "sha256", layer.slice(7)));
    symlinkSync(outside, join(root, "blobs", "sha256", layer.slice(7)));
    expect(s.content(a!.id, layer)).toBeUndefined();
    writeFileSync(join(root, "blobs", "sha256", config.slice(7)), "{}");
    expect(s.content(a!.id, config)).toBeUndefined();
    // What is still intact is still served.
    expect(sha256(await bodyBytes(s.content(a!.id, a!.target!.digest)!))).toBe(a!.target!.digest);
  });
});
