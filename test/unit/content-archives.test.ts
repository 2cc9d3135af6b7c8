// The content hook of the archives backend (what the mirror serves), on the
// tarballs made by skopeo, podman and containerd (scripts/make-fixtures-archives):
// an OCI archive's blobs byte for byte; a docker-archive's config member,
// each layer member as the tar whose digest is its diff_id, and the manifest
// imagelet writes for them; nothing an image does not reach.
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ImageRecord } from "../../src/backend/contract";
import { ArchiveDirStore } from "../../src/backends/archives/index";
import { writeManifest } from "../../src/backends/common/written-manifest";
import { ARCHIVE_STORE, TempDirs, fixtureStore, openArchives } from "./archive-fixtures";
import { MALFORMED_DIGESTS, bodyBytes, pullAll, sha256 } from "./content-helpers";

const TARBALLS = readdirSync(ARCHIVE_STORE).sort();
const DOCKER = ["hello-docker.tar", "multi-docker.tar", "tools-docker.tar.gz"];
const STORE = ARCHIVE_STORE;

const temps = new TempDirs("imagelet-content-archives-");
afterEach(() => temps.cleanup());
const tempDir = () => temps.make();
const storeDir = (...files: string[]) => fixtureStore(tempDir(), ...files);
const open = openArchives;

/** The image's config, as served. */
async function configOf(s: ArchiveDirStore, r: ImageRecord): Promise<{ rootfs: { diff_ids: string[] } }> {
  return JSON.parse((await bodyBytes(s.content(r.id, r.id)!)).toString("utf8"));
}

describe("every image of every fixture tarball is served whole", () => {
  for (const file of TARBALLS) {
    test(`${file}: the target and everything it reaches hash to their digests`, async () => {
      const { store: s, log } = open(storeDir(file));
      const records = await s.list();
      expect(records.length).toBeGreaterThan(0);
      for (const r of records) {
        expect(r.target).toBeDefined();
        const served = await pullAll((id, d) => s.content(id, d), r.id, r.target!);
        expect(served).toContain(r.id);
        expect(served.length).toBeGreaterThanOrEqual(3);
      }
      expect(log.lines.filter((l) => l.level === "warn")).toEqual([]);
    });
  }

  for (const file of DOCKER) {
    test(`${file}: the written manifest names the image ID as config and each diff_id, in order, as an uncompressed layer`, async () => {
      const { store: s } = open(storeDir(file));
      for (const r of await s.list()) {
        expect(r.target!.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
        const manifest = JSON.parse((await bodyBytes(s.content(r.id, r.target!.digest)!)).toString("utf8"));
        expect(manifest.config.digest).toBe(r.id);
        const config = await configOf(s, r);
        expect(manifest.layers.map((l: { digest: string }) => l.digest)).toEqual(config.rootfs.diff_ids);
        for (const layer of manifest.layers) {
          expect(layer.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
          const body = s.content(r.id, layer.digest)!;
          // A plain tar's member is a region of the tarball; a gzipped tarball's is a stream.
          expect(file.endsWith(".gz") ? body.open : body.file).toBeDefined();
          expect(sha256(await bodyBytes(body))).toBe(layer.digest);
        }
      }
    });
  }

  test("oci archives are served as stored: the target is the index.json entry, a plain tar's blobs are regions of the tarball", async () => {
    const dir = storeDir("hello-oci.tar", "tools-bare.tar.gz");
    const { store: s } = open(dir);
    for (const r of await s.list()) {
      const file = r.source!.endsWith(".gz") ? "tools-bare.tar.gz" : "hello-oci.tar";
      const index = JSON.parse(execFileSync("tar", ["-xOf", join(dir, file), "index.json"]).toString("utf8"));
      const entry = index.manifests[0];
      expect(r.target).toEqual({ mediaType: entry.mediaType, digest: entry.digest, size: entry.size });
      const body = s.content(r.id, r.target!.digest)!;
      if (file === "hello-oci.tar") expect(body.file?.path).toBe(join(dir, file));
      else expect(body.bytes).toBeDefined();
    }
  });

  test("the same image in several tarballs is served from the first that holds it", async () => {
    const { store: s } = open(storeDir(...TARBALLS));
    for (const r of await s.list()) await pullAll((id, d) => s.content(id, d), r.id, r.target!);
  });
});

describe("streams opened at an offset", () => {
  test("a layer inside a gzipped tarball, from byte 0 and from byte 100", async () => {
    const { store: s } = open(storeDir("tools-bare.tar.gz"));
    const [r] = await s.list();
    const manifest = JSON.parse((await bodyBytes(s.content(r!.id, r!.target!.digest)!)).toString("utf8"));
    const body = s.content(r!.id, manifest.layers[0].digest)!;
    expect(body.open).toBeDefined();
    const whole = await bodyBytes(body);
    expect(sha256(whole)).toBe(manifest.layers[0].digest);
    expect((await bodyBytes(body, 100)).equals(whole.subarray(100))).toBe(true);
    expect((await bodyBytes(body, whole.length - 1)).equals(whole.subarray(-1))).toBe(true);
  });

  test("a docker-archive layer of a gzipped tarball, from byte 1000", async () => {
    const { store: s } = open(storeDir("tools-docker.tar.gz"));
    const [r] = await s.list();
    const diffId = (await configOf(s, r!)).rootfs.diff_ids[0]!;
    const body = s.content(r!.id, diffId)!;
    const whole = await bodyBytes(body);
    expect(sha256(whole)).toBe(diffId);
    expect((await bodyBytes(body, 1000)).equals(whole.subarray(1000))).toBe(true);
  });

  test("an aborted stream stops", async () => {
    const { store: s } = open(storeDir("tools-bare.tar.gz"));
    const [r] = await s.list();
    const manifest = JSON.parse((await bodyBytes(s.content(r!.id, r!.target!.digest)!)).toString("utf8"));
    const abort = new AbortController();
    abort.abort();
    const read = async () => {
      for await (const _ of s.content(r!.id, manifest.layers[0].digest)!.open!(0, abort.signal));
    };
    await expect(read()).rejects.toThrow();
  });
});

describe("docker-archive layers kept gzip-compressed in the tar", () => {
  /** hello-docker.tar re-packed with its layer member gzip-compressed (`layer` bytes in place of the gzip, when given), as a plain or gzipped tarball. */
  function gzLayerArchive(gzipTarball: boolean, layerBytes?: Buffer): { store: string; plain: Buffer } {
    const work = tempDir();
    const unpacked = join(work, "unpacked");
    mkdirSync(unpacked);
    execFileSync("tar", ["-xf", join(STORE, "hello-docker.tar"), "-C", unpacked]);
    execFileSync("chmod", ["-R", "u+w", unpacked]);
    const manifestJson = JSON.parse(readFileSync(join(unpacked, "manifest.json"), "utf8"));
    const layer = manifestJson[0].Layers[0] as string;
    const plain = readFileSync(join(unpacked, layer));
    execFileSync("gzip", ["-n", join(unpacked, layer)]);
    if (layerBytes) writeFileSync(join(unpacked, `${layer}.gz`), layerBytes);
    manifestJson[0].Layers = [`${layer}.gz`];
    writeFileSync(join(unpacked, "manifest.json"), JSON.stringify(manifestJson));
    const store = join(work, "store");
    mkdirSync(store);
    const members = readdirSync(unpacked).sort();
    execFileSync("tar", [gzipTarball ? "-czf" : "-cf", join(store, gzipTarball ? "hello-gz-layer.tar.gz" : "hello-gz-layer.tar"), "-C", unpacked, ...members]);
    return { store, plain };
  }

  for (const gzipTarball of [false, true]) {
    test(`are served decompressed (${gzipTarball ? "gzipped" : "plain"} tarball): the digest is the diff_id, the written manifest has the uncompressed length`, async () => {
      const { store, plain } = gzLayerArchive(gzipTarball);
      const { store: s, log } = open(store);
      const [r] = await s.list();
      const config = await configOf(s, r!);
      const diffId = config.rootfs.diff_ids[0]!;
      expect(sha256(plain)).toBe(diffId);
      const body = s.content(r!.id, diffId)!;
      expect(body.open).toBeDefined();
      expect(body.size).toBe(plain.length);
      expect((await bodyBytes(body)).equals(plain)).toBe(true);
      expect((await bodyBytes(body, 600)).equals(plain.subarray(600))).toBe(true);
      const configBytes = await bodyBytes(s.content(r!.id, r!.id)!);
      expect(r!.target).toEqual(writeManifest({ digest: r!.id, size: configBytes.length }, [{ diffId, size: plain.length }]).descriptor);
      await pullAll((id, d) => s.content(id, d), r!.id, r!.target!);
      expect(log.lines.filter((l) => l.level === "warn")).toEqual([]);
    });
  }

  test("a layer that only looks gzip-compressed keeps its image listed; reading it fails rather than yield wrong bytes", async () => {
    const fake = Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(300, 7)]);
    const { store } = gzLayerArchive(false, fake);
    const { store: s } = open(store);
    const [r] = await s.list();
    expect(r!.target).toBeDefined();
    const diffId = (await configOf(s, r!)).rootfs.diff_ids[0]!;
    await expect(bodyBytes(s.content(r!.id, diffId)!)).rejects.toThrow();
  });
});

describe("only what an image reaches", () => {
  test("another image's layer, an image not listed, and malformed digests give undefined", async () => {
    const { store: s } = open(storeDir("multi-docker.tar"));
    const [a, b] = await s.list();
    const layerOfB = (await configOf(s, b!)).rootfs.diff_ids[0]!;
    expect((await configOf(s, a!)).rootfs.diff_ids).not.toContain(layerOfB);
    expect(s.content(a!.id, layerOfB)).toBeUndefined();
    expect(s.content(a!.id, b!.id)).toBeUndefined();
    expect(s.content(`sha256:${"0".repeat(64)}`, a!.id)).toBeUndefined();
    for (const bad of MALFORMED_DIGESTS) expect(s.content(a!.id, bad)).toBeUndefined();
  });

  test("a tarball changed since it was listed serves nothing until the next scan", async () => {
    const dir = storeDir("hello-oci.tar");
    const { store: s } = open(dir);
    const [r] = await s.list();
    expect(s.content(r!.id, r!.target!.digest)).toBeDefined();
    utimesSync(join(dir, "hello-oci.tar"), new Date(), new Date(Date.now() + 5000));
    expect(s.content(r!.id, r!.target!.digest)).toBeUndefined();
    const [again] = await s.list();
    expect(s.content(again!.id, again!.target!.digest)).toBeDefined();
  });
});
