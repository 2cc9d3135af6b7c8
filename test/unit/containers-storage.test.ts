// The containers/storage backend on a store made by skopeo, buildah and podman
// (scripts/make-fixtures-containers-storage), checked against what podman
// reported about that store (test/fixtures/containers-storage/expected.json),
// and on damaged copies of it.
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { BackendContext, ImageRecord } from "../../src/backend/contract";
import containersStorage, { ContainersStore } from "../../src/backends/containers-storage/index";
import { parseStorageImage, sortNamesByType } from "../../src/backends/common/cstorage";
import { StoreProblem, bigDataFileName } from "../../src/backends/common/files";
import { BackendRegistry } from "../../src/registry/registry";
import { writtenRepoDigestsOf } from "./content-helpers";
import { memoryLogger } from "./helpers";

const FIXTURE = resolve(import.meta.dir, "../fixtures/containers-storage");

interface PodmanImage {
  Id: string;
  Names: string[];
  Digest: string;
  RepoDigests: string[];
  Size: number;
}
interface PodmanInspect {
  Id: string;
  Digest: string;
  RepoTags: string[];
  RepoDigests: string[];
  NamesHistory: string[];
  Size: number;
  User: string;
  Labels: Record<string, string> | null;
  Annotations: Record<string, string>;
}
const podman: { driver: string; manifestLists: string[]; images: PodmanImage[]; inspect: PodmanInspect[] } = JSON.parse(
  readFileSync(join(FIXTURE, "expected.json"), "utf8"),
);
const inspectOf = (id: string) => podman.inspect.find((i) => i.Id === id)!;
const HELLO = podman.images.find((i) => i.Names.includes("example.com/edge/hello:1.0"))!;
const UNTAGGED = podman.images.find((i) => i.Names.length === 0)!;
const TWO = podman.images.find((i) => i.Names.includes("example.com/edge/two:1.0"))!;

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

/** A writable copy of the fixture store. */
function copy(): string {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-cs-"));
  temps.push(dir);
  const to = join(dir, "storage");
  cpSync(FIXTURE, to, { recursive: true });
  return to;
}

function open(root: string, driver?: string) {
  const log = memoryLogger();
  const notices: (string | undefined)[] = [];
  const ctx: BackendContext = {
    name: "cs",
    log,
    baseDir: "/",
    platform: { os: "linux", architecture: "amd64" },
    setNotice: (n) => void notices.push(n),
  };
  return { store: new ContainersStore(root, driver, ctx), log, notices };
}

const imagesJson = (root: string) => join(root, "vfs-images", "images.json");
const layersJson = (root: string) => join(root, "vfs-layers", "layers.json");
const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));
/** Writes as c/storage does: a temp file renamed over the old one. */
function replaceAtomically(path: string, value: unknown): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(value));
  renameSync(`${path}.tmp`, path);
}
const bigDataPath = (root: string, id: string, key: string) => join(root, "vfs-images", id, bigDataFileName(key));
const configKeyOf = (root: string, id: string) => readJson(bigDataPath(root, id, "manifest")).config.digest as string;
const byId = (records: readonly ImageRecord[], id: string) => records.find((r) => r.id === `sha256:${id}`);
const warned = (log: ReturnType<typeof memoryLogger>, needle: string) =>
  log.lines.filter((l) => l.level === "warn" && (l.msg.includes(needle) || String(l.fields?.path).includes(needle)));

describe("the fixture store agrees with podman", () => {
  const { store } = open(FIXTURE);
  const records = store.list();
  const content = (id: string, digest: string) => store.content(id, digest, { signal: new AbortController().signal });

  test("the same images, by ID (sha256:<c/storage id>), manifest lists left out", () => {
    expect(records.map((r) => r.id).sort()).toEqual(podman.images.map((i) => `sha256:${i.Id}`).sort());
    for (const list of podman.manifestLists) expect(byId(records, list)).toBeUndefined();
  });

  for (const image of podman.images) {
    test(`${image.Names[0] ?? "(untagged)"}: tags, repo digests and size`, async () => {
      const r = byId(records, image.Id)!;
      const inspect = inspectOf(image.Id);
      expect(r.repoTags).toEqual([...inspect.RepoTags].sort());
      // Not podman's RepoDigests (the registry's manifests, whose compressed layers are gone):
      // each repository the image is named in, at the manifest the mirror serves (docs/mirror.md).
      if (image.Names.length > 0) expect(r.repoDigests).toEqual(await writtenRepoDigestsOf(content, r.id, image.Names));
      for (const original of image.RepoDigests) expect(r.repoDigests).not.toContain(original);
      // Podman's Size is c/storage's image size; CRI-O's c/image Size() must give the same bytes.
      expect(r.size).toBe(image.Size);
      expect(r.user).toBe(inspect.User);
      expect(r.labels ?? null).toEqual(inspect.Labels === null ? null : inspect.Labels);
      expect(r.annotations ?? {}).toEqual(inspect.Annotations);
    });
  }

  test("an untagged image is listed as <names-history[0] repository>@<written digest> (CRI-O ListImages' form)", async () => {
    const inspect = inspectOf(UNTAGGED.Id);
    expect(UNTAGGED.RepoDigests).toEqual([]); // podman shows none; CRI-O's ListImages does, with the store's digest
    const previous = inspect.NamesHistory[0]!;
    const r = byId(records, UNTAGGED.Id)!;
    expect(r.repoTags).toEqual([]);
    expect(r.repoDigests).toEqual(await writtenRepoDigestsOf(content, r.id, [previous]));
    expect(r.repoDigests).not.toContain(`${previous.slice(0, previous.lastIndexOf(":"))}@${inspect.Digest}`);
  });

  test("a name stored with a digest gives its repository at the written manifest's digest, and no tag", async () => {
    const digestedOnly = podman.images.find((i) => i.Names.length > 0 && i.Names.every((n) => n.includes("@")))!;
    const r = byId(records, digestedOnly.Id)!;
    expect(r.repoTags).toEqual([]);
    // CRI-O would list two (the index and the instance); the node can serve neither, only its written manifest.
    expect(digestedOnly.RepoDigests.length).toBe(2);
    expect(r.repoDigests).toEqual(await writtenRepoDigestsOf(content, r.id, digestedOnly.Names));
    expect(r.repoDigests).toEqual([`${digestedOnly.Names[0]!.split("@")[0]}@${r.target!.digest}`]);
  });

  test("the config is read through the manifest: verbose detail (from status(), not kept with the list) and platform", () => {
    const r = byId(records, HELLO.Id)!;
    expect(r.config).toBeUndefined();
    expect((store.status(r.id)!.config as { author?: string }).author).toBe("Test <test@example.com>");
    expect(r.platform).toEqual({ os: "linux", architecture: "amd64", variant: undefined });
    expect(r.created).toBe("2024-01-02T03:04:05Z");
  });

  test("a two-layer image's size walks the parent chain", () => {
    const two = readJson(imagesJson(FIXTURE)).find((i: { id: string }) => i.id === TWO.Id);
    const layers: { id: string; parent?: string }[] = readJson(layersJson(FIXTURE));
    expect(layers.find((l) => l.id === two.layer)!.parent).toBeDefined();
    expect(byId(records, TWO.Id)!.size).toBe(TWO.Size);
  });

  test("status() returns the listed record with its config", () => {
    const { store: s } = open(FIXTURE);
    s.list();
    expect(s.status(`sha256:${HELLO.Id}`)?.config).toBeDefined();
    expect(s.status(`sha256:${"0".repeat(64)}`)).toBeUndefined();
  });
});

describe("change detection", () => {
  test("an unchanged store returns the same array; images.json replaced atomically gives the new answer", () => {
    const root = copy();
    const { store: s } = open(root);
    const a = s.list();
    expect(s.list()).toBe(a);
    const images = readJson(imagesJson(root)).filter((i: { id: string }) => i.id !== HELLO.Id);
    replaceAtomically(imagesJson(root), images);
    const b = s.list();
    expect(b).not.toBe(a);
    expect(byId(b, HELLO.Id)).toBeUndefined();
    expect(b).toHaveLength(a.length - 1);
    expect(s.list()).toBe(b);
  });

  test("a changed layers.json is read again", () => {
    const root = copy();
    const { store: s } = open(root);
    const a = s.list();
    const layers = readJson(layersJson(root));
    for (const l of layers) l["diff-size"] = (l["diff-size"] ?? 0) + 1;
    replaceAtomically(layersJson(root), layers);
    expect(byId(s.list(), HELLO.Id)!.size).toBe(byId(a, HELLO.Id)!.size + 1);
  });

  test("big data is not read again for an unchanged image (cached by ID and manifest digest)", () => {
    const root = copy();
    const { store: s } = open(root);
    s.list();
    unlinkSync(bigDataPath(root, HELLO.Id, configKeyOf(root, HELLO.Id)));
    const images = readJson(imagesJson(root));
    images.find((i: { id: string }) => i.id === HELLO.Id).names.push("example.com/edge/hello:again");
    replaceAtomically(imagesJson(root), images);
    const r = byId(s.list(), HELLO.Id)!;
    expect(r.repoTags).toContain("example.com/edge/hello:again");
    expect(r.user).toBe("app");
  });

  test("images.json truncated in place throws a StoreProblem; the registry keeps the last snapshot", async () => {
    const root = copy();
    const { store: s } = open(root);
    const log = memoryLogger();
    const registry = new BackendRegistry([{ name: "cs", type: "containers-storage", backend: s, timeoutMs: 2000 }], { log });
    await registry.loadAll();
    expect(registry.view.resolve("example.com/edge/hello:1.0")?.id).toBe(`sha256:${HELLO.Id}`);
    const good = readFileSync(imagesJson(root), "utf8");
    writeFileSync(imagesJson(root), good.slice(0, good.length / 2));
    expect(() => s.list()).toThrow(StoreProblem);
    await registry.loadAll();
    expect(registry.health()[0]!.state).toBe("failing");
    expect(registry.view.resolve("example.com/edge/hello:1.0")?.id).toBe(`sha256:${HELLO.Id}`);
    expect(log.lines.some((l) => l.level === "error" && String(l.fields?.error).includes(imagesJson(root)))).toBe(true);
    writeFileSync(imagesJson(root), good);
    await registry.loadAll();
    expect(registry.health()[0]!.state).toBe("ok");
  });
});

describe("damaged and hostile stores", () => {
  test("corrupt images.json throws with its path", () => {
    const root = copy();
    writeFileSync(imagesJson(root), "[{");
    const { store: s } = open(root);
    expect(() => s.list()).toThrow(/not valid JSON/);
    try {
      s.list();
    } catch (e) {
      expect((e as StoreProblem).path).toBe(imagesJson(root));
    }
  });

  test("truncated layers.json throws with its path", () => {
    const root = copy();
    const text = readFileSync(layersJson(root), "utf8");
    writeFileSync(layersJson(root), text.slice(0, 100));
    let problem: StoreProblem | undefined;
    try {
      open(root).store.list();
    } catch (e) {
      problem = e as StoreProblem;
    }
    expect(problem).toBeInstanceOf(StoreProblem);
    expect(problem!.path).toBe(layersJson(root));
  });

  test("a malformed images.json entry is skipped and logged once; the rest is served", () => {
    const root = copy();
    const images = readJson(imagesJson(root));
    images.push({ id: "../../../etc", layer: "x", names: ["evil:1"] }, { id: "a".repeat(64), layer: "x", names: 7 });
    replaceAtomically(imagesJson(root), images);
    const { store: s, log } = open(root);
    expect(s.list()).toHaveLength(podman.images.length);
    expect(warned(log, "is not 64 hex")).toHaveLength(1);
    expect(warned(log, "names is not a list")).toHaveLength(1);
    // Logged once: a re-scan with the same problems adds no lines.
    replaceAtomically(imagesJson(root), images);
    s.list();
    expect(warned(log, "is not 64 hex")).toHaveLength(1);
  });

  test("a missing manifest file: the image is listed without config, logged with the path", () => {
    const root = copy();
    unlinkSync(bigDataPath(root, HELLO.Id, "manifest"));
    const { store: s, log } = open(root);
    const r = byId(s.list(), HELLO.Id)!;
    expect(r).toMatchObject({ size: HELLO.Size, user: undefined });
    expect(r.config).toBeUndefined();
    expect(s.status(r.id)!.config).toBeUndefined();
    expect(r.repoTags).toContain("example.com/edge/hello:1.0");
    expect(warned(log, join(HELLO.Id, "manifest"))).toHaveLength(1);
  });

  test("a missing config file: listed without config, logged with the path; back once the file is", () => {
    const root = copy();
    const config = bigDataPath(root, HELLO.Id, configKeyOf(root, HELLO.Id));
    const saved = readFileSync(config);
    unlinkSync(config);
    const { store: s, log } = open(root);
    expect(byId(s.list(), HELLO.Id)!.config).toBeUndefined();
    expect(warned(log, config)).toHaveLength(1);
    writeFileSync(config, saved);
    expect(byId(s.list(), HELLO.Id)!.user).toBe("app");
  });

  test("a file the service may not read: listed without config, logged with the path", () => {
    const root = copy();
    const config = bigDataPath(root, HELLO.Id, configKeyOf(root, HELLO.Id));
    chmodSync(dirname(root), 0o755);
    chmodSync(config, 0o000);
    // Root reads anything, so as root the store is read by a child running as nobody.
    const asNobody = process.getuid?.() === 0 ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] : [];
    const script = join(dirname(root), "read-as-nobody.ts");
    writeFileSync(
      script,
      `import { ContainersStore } from ${JSON.stringify(resolve(import.meta.dir, "../../src/backends/containers-storage/index"))};
const lines: unknown[] = [];
const at = (level: string) => (msg: string, fields?: unknown) => void lines.push({ level, msg, fields });
const log = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
const s = new ContainersStore(process.argv[2]!, undefined, { name: "cs", log, baseDir: "/", platform: { os: "linux", architecture: "amd64" }, setNotice() {} });
const records = s.list();
console.log(JSON.stringify({ count: records.length, hello: records.find((r) => r.id === "sha256:" + process.argv[3]), lines }));`,
    );
    chmodSync(script, 0o644);
    const [cmd, ...args] = [...asNobody, process.execPath, script, root, HELLO.Id];
    const out = JSON.parse(execFileSync(cmd!, args, { encoding: "utf8", env: { ...process.env, BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0" } }));
    expect(out.count).toBe(podman.images.length);
    expect(out.hello).toMatchObject({ size: HELLO.Size });
    expect(out.hello.config).toBeUndefined();
    expect(out.lines.filter((l: { level: string; msg: string; fields: { path: string } }) => l.level === "warn" && l.fields.path === config && l.msg.includes("EACCES"))).toHaveLength(1);
  });

  test("a big-data file symlinked out of the store is refused; one inside is followed", () => {
    const root = copy();
    const config = bigDataPath(root, HELLO.Id, configKeyOf(root, HELLO.Id));
    const outside = join(root, "..", "outside-config");
    cpSync(config, outside);
    unlinkSync(config);
    symlinkSync(outside, config);
    const { store: s, log } = open(root);
    expect(byId(s.list(), HELLO.Id)!.config).toBeUndefined();
    expect(warned(log, "resolves outside the store")).toHaveLength(1);

    const root2 = copy();
    const config2 = bigDataPath(root2, HELLO.Id, configKeyOf(root2, HELLO.Id));
    renameSync(config2, join(root2, "kept-config"));
    symlinkSync("../../kept-config", config2);
    expect(byId(open(root2).store.list(), HELLO.Id)!.user).toBe("app");
  });

  test("a big-data symlink loop is refused with the path", () => {
    const root = copy();
    const manifest = bigDataPath(root, TWO.Id, "manifest");
    unlinkSync(manifest);
    symlinkSync(manifest, manifest);
    const { store: s, log } = open(root);
    expect(byId(s.list(), TWO.Id)!.config).toBeUndefined();
    expect(log.lines.some((l) => l.fields?.path === manifest && l.msg.includes("ELOOP"))).toBe(true);
  });

  test("a directory in place of a big-data file is refused", () => {
    const root = copy();
    const manifest = bigDataPath(root, TWO.Id, "manifest");
    unlinkSync(manifest);
    mkdirSync(manifest);
    const { store: s, log } = open(root);
    expect(byId(s.list(), TWO.Id)).toBeDefined();
    expect(warned(log, "not a regular file")).toHaveLength(1);
  });

  test("an images.json symlinked out of the store is refused", () => {
    const root = copy();
    const outside = join(root, "..", "outside-images.json");
    cpSync(imagesJson(root), outside);
    unlinkSync(imagesJson(root));
    symlinkSync(outside, imagesJson(root));
    expect(() => open(root).store.list()).toThrow(/resolves outside the store/);
  });

  test("a store root that disappears throws (the registry keeps the last snapshot)", () => {
    const root = copy();
    const { store: s } = open(root);
    expect(s.list().length).toBeGreaterThan(0);
    rmSync(root, { recursive: true });
    expect(() => s.list()).toThrow(/no store root/);
    expect(() => open("/nonexistent/imagelet-cs").store.list()).toThrow(/no store root/);
    expect(() => open("/nonexistent/imagelet-cs", "vfs").store.list()).toThrow(/no images.json/);
  });

  test("an image whose layer is not in layers.json is skipped and logged with layers.json's path", () => {
    const root = copy();
    const hello = readJson(imagesJson(root)).find((i: { id: string }) => i.id === HELLO.Id);
    replaceAtomically(layersJson(root), readJson(layersJson(root)).filter((l: { id: string }) => l.id !== hello.layer));
    const { store: s, log } = open(root);
    const records = s.list();
    expect(byId(records, HELLO.Id)).toBeUndefined();
    // TWO sits on hello's layer, so its chain is broken too.
    expect(byId(records, TWO.Id)).toBeUndefined();
    expect(records).toHaveLength(podman.images.length - 2);
    expect(warned(log, "is not in the layer store").every((l) => l.fields?.path === layersJson(root))).toBe(true);
    expect(warned(log, "is not in the layer store")).toHaveLength(2);
  });

  test("an image on an incomplete layer is skipped quietly (still being pulled)", () => {
    const root = copy();
    const hello = readJson(imagesJson(root)).find((i: { id: string }) => i.id === HELLO.Id);
    const layers = readJson(layersJson(root));
    layers.find((l: { id: string }) => l.id === hello.layer).flags = { incomplete: true };
    replaceAtomically(layersJson(root), layers);
    const { store: s, log } = open(root);
    expect(byId(s.list(), HELLO.Id)).toBeUndefined();
    expect(log.lines.filter((l) => l.level === "warn")).toHaveLength(0);
  });

  test("a parent cycle in layers.json ends the walk", () => {
    const root = copy();
    const hello = readJson(imagesJson(root)).find((i: { id: string }) => i.id === HELLO.Id);
    const layers = readJson(layersJson(root));
    layers.find((l: { id: string }) => l.id === hello.layer).parent = hello.layer;
    replaceAtomically(layersJson(root), layers);
    const { store: s, log } = open(root);
    expect(byId(s.list(), HELLO.Id)).toBeUndefined();
    expect(warned(log, "parent cycle")).toHaveLength(2);
  });

  test("layers in volatile-layers.json count", () => {
    const root = copy();
    const hello = readJson(imagesJson(root)).find((i: { id: string }) => i.id === HELLO.Id);
    const layers = readJson(layersJson(root));
    replaceAtomically(join(root, "vfs-layers", "volatile-layers.json"), layers.filter((l: { id: string }) => l.id === hello.layer));
    replaceAtomically(layersJson(root), layers.filter((l: { id: string }) => l.id !== hello.layer));
    expect(byId(open(root).store.list(), HELLO.Id)!.size).toBe(HELLO.Size);
  });

  test("a name that is not a reference is dropped and logged; the image stays", () => {
    const root = copy();
    const images = readJson(imagesJson(root));
    images.find((i: { id: string }) => i.id === HELLO.Id).names.push("Not A Name");
    replaceAtomically(imagesJson(root), images);
    const { store: s, log } = open(root);
    expect(byId(s.list(), HELLO.Id)!.repoTags).toEqual([...inspectOf(HELLO.Id).RepoTags].sort());
    expect(warned(log, "is not a reference")).toHaveLength(1);
  });
});

describe("drivers", () => {
  test("with several drivers' images, overlay is read, and the choice is a notice", () => {
    const root = copy();
    mkdirSync(join(root, "overlay-images"));
    writeFileSync(join(root, "overlay-images", "images.json"), "[]");
    const { store: s, notices } = open(root);
    expect(s.list()).toEqual([]);
    expect(notices.at(-1)).toContain("overlay, vfs");
    const { store: vfs } = open(root, "vfs");
    expect(vfs.list()).toHaveLength(podman.images.length);
  });

  test("options: path is required; driver must be a driver name", () => {
    expect(containersStorage.options.path.required).toBe(true);
    const ctx: BackendContext = { name: "t", log: memoryLogger(), baseDir: "/", platform: { os: "linux", architecture: "amd64" }, setNotice() {} };
    expect(() => containersStorage.create({ path: "/x", driver: "../etc" }, ctx)).toThrow(/driver/);
    expect(containersStorage.create({ path: "/x", driver: "overlay" }, ctx)).toBeInstanceOf(ContainersStore);
  });
});

describe("CRI-O's naming rules (common/cstorage)", () => {
  const image = parseStorageImage({
    id: "b".repeat(64),
    digest: `sha256:${"1".repeat(64)}`,
    names: ["example.com/a:1", `example.com/b@sha256:${"2".repeat(64)}`],
    layer: "l",
    "big-data-names": ["manifest", `manifest-sha256:${"2".repeat(64)}`, "manifest-sha256:bad"],
    "big-data-digests": { manifest: `sha256:${"2".repeat(64)}`, [`manifest-sha256:${"2".repeat(64)}`]: `sha256:${"2".repeat(64)}`, "manifest-sha256:bad": "" },
  });
  test("names ending in @sha256:<hex> are digests, everything else tags", () => {
    const sorted = sortNamesByType([...image.names, "Not A Name"]);
    expect(sorted.tags.map((t) => t.name)).toEqual(["example.com/a:1"]);
    expect(sorted.digested).toEqual([{ name: `example.com/b@sha256:${"2".repeat(64)}`, repository: "example.com/b", digest: `sha256:${"2".repeat(64)}` }]);
    expect(sorted.invalid).toEqual(["Not A Name"]);
  });
});
