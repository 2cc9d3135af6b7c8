// The registry mirror's content for stores that keep no registry manifest
// (containers/storage, Docker's classic store), on the fixture stores made
// by podman/skopeo/buildah and by dockerd (scripts/make-fixtures-*): the
// written manifest names the stored config (digest = image ID) and layers
// re-created from tar-split whose sha256 is their diff_id; and on damaged
// copies, where nothing from outside a layer is ever yielded.
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Backend, BackendContext, ContentBody, ImageRecord } from "../../src/backend/contract";
import { StoreProblem } from "../../src/backends/common/files";
import { ContainersStore } from "../../src/backends/containers-storage/index";
import { DockerStore } from "../../src/backends/docker/index";
import { memoryLogger } from "./helpers";

const CS_FIXTURE = resolve(import.meta.dir, "../fixtures/containers-storage");
const DOCKER_FIXTURE = resolve(import.meta.dir, "../fixtures/docker/root");
const call = () => ({ signal: new AbortController().signal });
const sha256 = (b: Uint8Array) => `sha256:${new Bun.CryptoHasher("sha256").update(b).digest("hex")}`;

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function copyOf(fixture: string): { root: string; outside: string } {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-recreate-"));
  temps.push(dir);
  cpSync(fixture, join(dir, "store"), { recursive: true });
  return { root: join(dir, "store"), outside: dir };
}

interface Kind {
  name: string;
  fixture: string;
  open(root: string, ctx: BackendContext): Backend & { list(): ImageRecord[] | Promise<readonly ImageRecord[]> };
  /** Where a layer's tar-split and unpacked directory are, by the layer's diff_id. */
  layerPaths(root: string, diffId: string, image: ImageRecord): { tarSplit: string; dir: string };
}

const csLayers = (root: string) => JSON.parse(readFileSync(join(root, "vfs-layers/layers.json"), "utf8")) as { id: string; "diff-digest": string; "diff-size": number }[];
const dockerChain = (root: string, diffId: string, image: ImageRecord) => {
  const config = JSON.parse(readFileSync(join(root, "image/vfs/imagedb/content/sha256", image.id.slice(7)), "utf8"));
  const diffIds: string[] = config.rootfs.diff_ids;
  let chain = "";
  for (const d of diffIds) {
    chain = chain === "" ? d : sha256(Buffer.from(`${chain} ${d}`));
    if (d === diffId) return chain.slice(7);
  }
  throw new Error(`no ${diffId}`);
};

const KINDS: Kind[] = [
  {
    name: "containers-storage",
    fixture: CS_FIXTURE,
    open: (root, ctx) => new ContainersStore(root, undefined, ctx),
    layerPaths: (root, diffId) => {
      const layer = csLayers(root).find((l) => l["diff-digest"] === diffId)!;
      return { tarSplit: join(root, "vfs-layers", `${layer.id}.tar-split.gz`), dir: join(root, "vfs/dir", layer.id) };
    },
  },
  {
    name: "docker",
    fixture: DOCKER_FIXTURE,
    open: (root, ctx) => new DockerStore({ root }, ctx),
    layerPaths: (root, diffId, image) => {
      const layerDb = join(root, "image/vfs/layerdb/sha256", dockerChain(root, diffId, image));
      const cacheId = readFileSync(join(layerDb, "cache-id"), "utf8").trim();
      return { tarSplit: join(layerDb, "tar-split.json.gz"), dir: join(root, "vfs/dir", cacheId) };
    },
  },
];

function open(kind: Kind, root: string) {
  const log = memoryLogger();
  const ctx: BackendContext = { name: kind.name, log, baseDir: "/", platform: { os: "linux", architecture: "amd64" }, setNotice: () => {} };
  return { backend: kind.open(root, ctx), log };
}

async function drain(body: ContentBody, start = 0): Promise<{ bytes: Buffer; error?: unknown }> {
  if (body.bytes) return { bytes: Buffer.from(body.bytes).subarray(start) };
  const chunks: Uint8Array[] = [];
  try {
    for await (const c of body.open!(start, new AbortController().signal)) chunks.push(c);
    return { bytes: Buffer.concat(chunks) };
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error };
  }
}

interface Manifest {
  mediaType: string;
  config: { digest: string; size: number; mediaType: string };
  layers: { digest: string; size: number; mediaType: string }[];
}

async function manifestOf(backend: Backend, record: ImageRecord): Promise<Manifest> {
  const body = (await backend.content!(record.id, record.target!.digest, call()))!;
  expect(body.bytes).toBeDefined();
  expect(sha256(body.bytes!)).toBe(record.target!.digest);
  expect(body.size).toBe(record.target!.size);
  return JSON.parse(Buffer.from(body.bytes!).toString("utf8"));
}

const warnings = (log: ReturnType<typeof memoryLogger>, backend: string) =>
  log.lines.filter((l) => l.level === "warn" && l.fields?.backend === backend).map((l) => ({ msg: l.msg, path: String(l.fields?.path) }));

for (const kind of KINDS) {
  describe(`${kind.name}: every image of the fixture store, as the mirror serves it`, async () => {
    const { backend, log } = open(kind, kind.fixture);
    const records = (await backend.list({ signal: new AbortController().signal })).filter((r) => r.kind === "oci");

    test("every image has a written manifest, and nothing was logged", () => {
      expect(records.length).toBeGreaterThan(2);
      for (const r of records) expect(r.target?.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
      expect(warnings(log, kind.name)).toEqual([]);
    });

    for (const record of records) {
      test(`${record.repoTags[0] ?? record.id}: config digest = image ID, each layer's sha256 = its diff_id, its length the tar's, ranges are suffixes`, async () => {
        const manifest = await manifestOf(backend, record);
        expect(manifest.config.digest).toBe(record.id);
        const config = (await backend.content!(record.id, record.id, call()))!;
        expect(sha256(config.bytes!)).toBe(record.id);
        expect(config.size).toBe(manifest.config.size);
        const diffIds: string[] = JSON.parse(Buffer.from(config.bytes!).toString("utf8")).rootfs.diff_ids;
        expect(manifest.layers.map((l) => l.digest)).toEqual(diffIds);
        for (const layer of manifest.layers) {
          expect(layer.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
          const body = (await backend.content!(record.id, layer.digest, call()))!;
          expect(body.size).toBe(layer.size);
          const { bytes, error } = await drain(body);
          expect(error).toBeUndefined();
          expect(bytes.length).toBe(layer.size);
          expect(sha256(bytes)).toBe(layer.digest);
          for (const start of [1, 512, Math.floor(layer.size / 2), layer.size - 1]) {
            expect((await drain(body, start)).bytes.equals(bytes.subarray(start))).toBe(true);
          }
        }
        if (kind.name === "containers-storage") {
          for (const layer of manifest.layers) expect(csLayers(kind.fixture).find((l) => l["diff-digest"] === layer.digest)!["diff-size"]).toBe(layer.size);
        }
      });
    }

    test("a digest not reachable from the image is not served", async () => {
      const [a, b] = records;
      const other = await manifestOf(backend, b!);
      const mine = new Set((await manifestOf(backend, a!)).layers.map((l) => l.digest));
      const foreign = other.layers.find((l) => !mine.has(l.digest));
      if (foreign) expect(await backend.content!(a!.id, foreign.digest, call())).toBeUndefined();
      expect(await backend.content!(a!.id, b!.id, call())).toBeUndefined();
      expect(await backend.content!(a!.id, `sha256:${"0".repeat(64)}`, call())).toBeUndefined();
      expect(await backend.content!(`sha256:${"0".repeat(64)}`, a!.target!.digest, call())).toBeUndefined();
    });
  });

  describe(`${kind.name}: a damaged copy never yields bytes from outside a layer`, () => {
    /** The copy, one image's first layer with a regular file, and that file. */
    async function damaged() {
      const { root, outside } = copyOf(kind.fixture);
      const { backend, log } = open(kind, root);
      const records = await backend.list({ signal: new AbortController().signal });
      for (const record of records) {
        if (!record.target) continue;
        const manifest = await manifestOf(backend, record);
        for (const layer of manifest.layers) {
          const paths = kind.layerPaths(root, layer.digest, record);
          const members = execFileSync("tar", ["-tf", "-"], { input: (await drain((await backend.content!(record.id, layer.digest, call()))!)).bytes })
            .toString()
            .split("\n")
            .map((n) => n.replace(/^\.\//, ""));
          const file = members.find((n) => n.endsWith(".txt") && readFileSync(join(paths.dir, n)).length > 0);
          if (file) return { root, outside, backend, log, record, layer, paths, file: join(paths.dir, file) };
        }
      }
      throw new Error("no layer with a file in the fixture");
    }

    async function expectRefused(d: Awaited<ReturnType<typeof damaged>>, why: string, secret?: string) {
      const body = (await d.backend.content!(d.record.id, d.layer.digest, call()))!;
      const { bytes, error } = await drain(body);
      expect(error).toBeInstanceOf(StoreProblem);
      expect((error as Error).message).toContain(why);
      // Small layers are joined into one output: the member failed before any of the layer left.
      expect(bytes.length).toBe(0);
      if (secret) expect(bytes.includes(secret)).toBe(false);
      expect(warnings(d.log, kind.name).some((w) => w.msg.includes(why) && w.path === d.file)).toBe(true);
    }

    test("a file swapped for a symlink to a file outside the store", async () => {
      const d = await damaged();
      const secret = readFileSync(d.file, "utf8").replace(/./g, "S");
      writeFileSync(join(d.outside, "secret"), secret);
      unlinkSync(d.file);
      symlinkSync(join(d.outside, "secret"), d.file);
      await expectRefused(d, "symlink", secret);
    });

    test("a file whose content changed, same size", async () => {
      const d = await damaged();
      const secret = readFileSync(d.file, "utf8").replace(/./g, "S");
      writeFileSync(d.file, secret);
      await expectRefused(d, "CRC-64", secret);
    });

    test("a file replaced by a FIFO (and the stream does not hang)", async () => {
      const d = await damaged();
      unlinkSync(d.file);
      execFileSync("mkfifo", [d.file]);
      await expectRefused(d, "not a regular file");
    }, 5000);

    test("a corrupt tar-split: not served (logged with backend and path); corrupted under a download, the stream throws (logged)", async () => {
      const d = await damaged();
      const body = (await d.backend.content!(d.record.id, d.layer.digest, call()))!;
      const good = readFileSync(d.paths.tarSplit);
      writeFileSync(d.paths.tarSplit, good.subarray(0, good.length - 12));
      const { error } = await drain(body);
      expect((error as Error).message).toContain("corrupt tar-split");
      expect(warnings(d.log, kind.name).some((w) => w.msg.includes("corrupt tar-split") && w.path === d.paths.tarSplit)).toBe(true);
      writeFileSync(d.paths.tarSplit, "garbage");
      expect(await d.backend.content!(d.record.id, d.layer.digest, call())).toBeUndefined();
      expect(warnings(d.log, kind.name).filter((w) => w.msg.includes("corrupt tar-split") && w.path === d.paths.tarSplit).length).toBe(2);
    });

    test("a layer without its tar-split is not served, with the reason logged", async () => {
      const d = await damaged();
      unlinkSync(d.paths.tarSplit);
      // Docker reads tar-splits when it lists: a fresh backend leaves the image without a target.
      const fresh = open(kind, d.root);
      const record = (await fresh.backend.list(call())).find((r) => r.id === d.record.id)!;
      if (kind.name === "docker") {
        expect(record.target).toBeUndefined();
      } else {
        expect(await fresh.backend.content!(record.id, d.layer.digest, call())).toBeUndefined();
      }
      expect(warnings(fresh.log, kind.name).some((w) => w.msg.includes("tar-split") && w.path === d.paths.tarSplit)).toBe(true);
    });
  });
}

describe("containers-storage: what the store cannot re-create", () => {
  test("diff-size -1 (a partial pull): listed, no target, the reason logged once", async () => {
    const { root } = copyOf(CS_FIXTURE);
    const layers = csLayers(root);
    layers[0]!["diff-size"] = -1;
    writeFileSync(join(root, "vfs-layers/layers.json"), JSON.stringify(layers));
    const { backend, log } = open(KINDS[0]!, root);
    const records = await backend.list(call());
    const affected = records.filter((r) => r.target === undefined);
    expect(affected.length).toBeGreaterThan(0);
    expect(warnings(log, "containers-storage").some((w) => w.msg.includes("no uncompressed size"))).toBe(true);
  });

  test("the overlay driver's layout (overlay/<id>/diff, each layer's own files) serves the same bytes", async () => {
    const { root } = copyOf(CS_FIXTURE);
    for (const d of ["images", "layers"]) cpSync(join(root, `vfs-${d}`), join(root, `overlay-${d}`), { recursive: true });
    for (const d of ["images", "layers"]) rmSync(join(root, `vfs-${d}`), { recursive: true });
    for (const id of readdirSync(join(root, "vfs/dir"))) cpSync(join(root, "vfs/dir", id), join(root, "overlay", id, "diff"), { recursive: true });
    rmSync(join(root, "vfs"), { recursive: true });
    const { backend, log } = open(KINDS[0]!, root);
    for (const record of await backend.list(call())) {
      for (const layer of (await manifestOf(backend, record)).layers) {
        const { bytes, error } = await drain((await backend.content!(record.id, layer.digest, call()))!);
        expect(error).toBeUndefined();
        expect(sha256(bytes)).toBe(layer.digest);
      }
    }
    expect(warnings(log, "containers-storage")).toEqual([]);
  });

  test("a driver whose layers are not read: not served, the reason logged", async () => {
    const { root } = copyOf(CS_FIXTURE);
    for (const d of ["images", "layers"]) cpSync(join(root, `vfs-${d}`), join(root, `btrfs-${d}`), { recursive: true });
    for (const d of ["images", "layers"]) rmSync(join(root, `vfs-${d}`), { recursive: true });
    const { backend, log } = open(KINDS[0]!, root);
    const record = (await backend.list(call())).find((r) => r.target)!;
    const manifest = await manifestOf(backend, record);
    expect(await backend.content!(record.id, manifest.layers[0]!.digest, call())).toBeUndefined();
    expect(warnings(log, "containers-storage").some((w) => w.msg.includes("btrfs driver"))).toBe(true);
    expect(readdirSync(root)).toContain("btrfs-layers");
  });
});
