// Removal from a writable OCI layout when the layout does not hold still:
// another writer (skopeo) changes index.json while a removal walks it, a
// temporary file's name is taken, a blob cannot be deleted. Each test drives
// removeFromLayout with a blob reader that does the disturbing thing at the
// moment the removal reads its first blob (between reading index.json and
// replacing it), so the interleaving is exact, not timed.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Platform } from "../../src/backend/contract";
import { ProblemLog } from "../../src/backends/common/files";
import { OciLayoutStore } from "../../src/backends/oci-layout/index";
import type { LayoutSource } from "../../src/backends/common/oci-images";
import { readJsonBlob } from "../../src/backends/common/oci-blobs";
import { JOURNAL, removeFromLayout } from "../../src/backends/oci-layout/remove";
import { memoryLogger } from "./helpers";

const FIXTURES = resolve(import.meta.dir, "../fixtures");
const expected: { layout: string; ref: string | null; id: string }[] = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8"));
const amd64: Platform = { os: "linux", architecture: "amd64" };
const ID_1_0 = expected.find((e) => e.layout === "oci-umoci" && e.ref === "1.0")!.id;
const ID_2_0 = expected.find((e) => e.layout === "oci-umoci" && e.ref === "2.0")!.id;

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-rmlayout-"));
  temps.push(dir);
  return dir;
}

function copyUmoci(): string {
  const to = join(tempDir(), "oci-umoci");
  cpSync(join(FIXTURES, "oci-umoci"), to, { recursive: true });
  return to;
}

/** A LayoutSource over `root` whose blob reader runs `disturb` once, at the first blob read. */
function sourceOf(root: string, disturb?: () => void): LayoutSource {
  const log = memoryLogger();
  let disturbed = false;
  return {
    repository: "localhost/oci-umoci",
    platform: amd64,
    problems: new ProblemLog(log, "test"),
    log,
    backend: "test",
    path: root,
    blob(digest) {
      if (!disturbed && disturb) {
        disturbed = true;
        disturb();
      }
      return readJsonBlob(root, digest);
    },
  };
}

const manifestsOf = (root: string) => JSON.parse(readFileSync(join(root, "index.json"), "utf8")).manifests as { digest: string; annotations?: Record<string, string> }[];
const refNames = (root: string) => manifestsOf(root).map((m) => m.annotations?.["org.opencontainers.image.ref.name"]);

function listed(root: string) {
  const s = new OciLayoutStore(root, undefined, { name: "test", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice() {} });
  return s.list();
}

describe("removal while another writer changes index.json", () => {
  test("an entry another writer adds while the removal walks the layout is kept", async () => {
    const root = copyUmoci();
    const src = sourceOf(root, () => {
      // skopeo copy ... oci:root:added, finishing while the removal walks the layout.
      const index = JSON.parse(readFileSync(join(root, "index.json"), "utf8"));
      index.manifests.push({ ...index.manifests[0], annotations: { "org.opencontainers.image.ref.name": "added" } });
      writeFileSync(join(root, "index.json"), JSON.stringify(index));
    });
    const removal = await removeFromLayout(root, ID_2_0, src);
    expect(removal.entries).toBe(1);
    expect(refNames(root)).toEqual(["1.0", "latest", "example.com/edge/hello:1.0", "added"]);
    expect(listed(root).map((r) => r.id)).toEqual([ID_1_0]);
    expect(existsSync(join(root, JOURNAL))).toBe(false);
  });

  test("an index.json that keeps changing is refused, and nothing is removed", async () => {
    const root = copyUmoci();
    let n = 0;
    const src = sourceOf(root);
    const read = src.blob.bind(src);
    src.blob = (digest) => {
      // Every walk sees a new index.json (a writer that never stops).
      const index = JSON.parse(readFileSync(join(root, "index.json"), "utf8"));
      index.manifests.push({ ...index.manifests[0], annotations: { "org.opencontainers.image.ref.name": `w${n++}` } });
      writeFileSync(join(root, "index.json"), JSON.stringify(index));
      return read(digest);
    };
    const blobsBefore = readdirSync(join(root, "blobs", "sha256")).sort();
    await expect(removeFromLayout(root, ID_2_0, src)).rejects.toThrow(/index\.json changed/);
    expect(refNames(root)).toContain("2.0");
    expect(readdirSync(join(root, "blobs", "sha256")).sort()).toEqual(blobsBefore);
    expect(existsSync(join(root, JOURNAL))).toBe(false);
  });
});

describe("removal writes only its own files", () => {
  test("a temporary file's name taken by a symlink: the file it points to is not written", async () => {
    const root = copyUmoci();
    const victim = join(tempDir(), "victim");
    writeFileSync(victim, "keep me\n");
    const src = sourceOf(root, () => {
      symlinkSync(victim, join(root, `.imagelet-tmp-${process.pid}-index.json`));
      symlinkSync(victim, join(root, `.imagelet-tmp-${process.pid}-${JOURNAL}`));
    });
    await removeFromLayout(root, ID_2_0, src).catch(() => undefined);
    expect(readFileSync(victim, "utf8")).toBe("keep me\n");
  });
});

describe("a blob that cannot be deleted", () => {
  test("a directory named like a temporary file does not stop removals", async () => {
    const root = copyUmoci();
    mkdirSync(join(root, ".imagelet-tmp-1-index.json"));
    const r = await removeFromLayout(root, ID_2_0, sourceOf(root));
    expect(r.entries).toBe(1);
    expect(refNames(root)).not.toContain("2.0");
  });

  test("does not fail the removal, nor every removal after it", async () => {
    const root = copyUmoci();
    const blobs = join(root, "blobs", "sha256");
    // The 2.0 image's layer: a blob only its manifest reaches.
    const manifest2 = manifestsOf(root).find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === "2.0")!.digest;
    const layer = (JSON.parse(readFileSync(join(blobs, manifest2.slice(7)), "utf8")).layers as { digest: string }[])[0]!.digest.slice(7);
    unlinkSync(join(blobs, layer));
    mkdirSync(join(blobs, layer)); // unlink(2) of a directory fails (EISDIR)
    writeFileSync(join(blobs, layer, "x"), "x");
    await removeFromLayout(root, ID_2_0, sourceOf(root));
    expect(refNames(root)).toEqual(["1.0", "latest", "example.com/edge/hello:1.0"]);
    // The next removal is not held up by the leftover.
    const r = await removeFromLayout(root, ID_1_0, sourceOf(root));
    expect(r.entries).toBe(3);
    expect(manifestsOf(root)).toEqual([]);
    expect(readdirSync(blobs)).toEqual([layer]);
  });
});

describe("a kept entry whose blobs cannot be followed", () => {
  test("a kept manifest that cannot be read (linked out of the layout) keeps every blob it may reach", async () => {
    const root = copyUmoci();
    const blobs = join(root, "blobs", "sha256");
    const index = JSON.parse(readFileSync(join(root, "index.json"), "utf8"));
    const entry2 = index.manifests.find((m: { annotations: Record<string, string> }) => m.annotations["org.opencontainers.image.ref.name"] === "2.0");
    // Another image built on 2.0's config and layer, its manifest kept in a shared cache outside the layout.
    const manifest = JSON.parse(readFileSync(join(blobs, entry2.digest.slice(7)), "utf8"));
    manifest.annotations = { "org.example.copy": "k" };
    const text = JSON.stringify(manifest);
    const digest = new Bun.CryptoHasher("sha256").update(text).digest("hex");
    const cache = tempDir();
    writeFileSync(join(cache, digest), text);
    symlinkSync(join(cache, digest), join(blobs, digest));
    index.manifests.push({ mediaType: entry2.mediaType, digest: `sha256:${digest}`, size: text.length, annotations: { "org.opencontainers.image.ref.name": "k" } });
    writeFileSync(join(root, "index.json"), JSON.stringify(index));
    const shared = [manifest.config.digest, ...manifest.layers.map((l: { digest: string }) => l.digest)].map((d: string) => d.slice(7));
    const removal = await removeFromLayout(root, ID_2_0, sourceOf(root));
    expect(removal.entries).toBe(1);
    expect(refNames(root)).not.toContain("2.0");
    for (const b of shared) expect(existsSync(join(blobs, b))).toBe(true);
    // What was not deleted is not forgotten: the journal keeps it for the next removal.
    expect(removal.blobsLeft).toBeGreaterThan(0);
    expect(removal.leftBecause).toMatch(/cannot be read/);
    expect(existsSync(join(root, JOURNAL))).toBe(true);
  });
});
