// The Docker backend on a store made by dockerd 20.10 (scripts/make-fixtures-docker),
// checked against what docker itself reported about it (test/fixtures/docker/expected.json),
// and on damaged copies of it.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { BackendContext, ImageRecord, Platform } from "../../src/backend/contract";
import docker, { DockerStore, type DockerStoreOptions } from "../../src/backends/docker/index";
import { chainIds } from "../../src/model/digest";
import { StoreProblem } from "../../src/backends/common/files";
import { writtenRepoDigestsOf } from "./content-helpers";
import { memoryLogger } from "./helpers";
const call = () => ({ signal: new AbortController().signal });

const FIXTURE = resolve(import.meta.dir, "../fixtures/docker");
interface Inspected {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Size: number;
  Parent: string;
  User: string;
  Labels: Record<string, string> | null;
  Layers: string[];
  ConfigBytes: number;
}
interface ImagesRow {
  ID: string;
  Repository: string;
  Tag: string;
  Digest: string;
}
const expected: { driver: string; inspect: Inspected[]; images: ImagesRow[]; imagesAll: ImagesRow[] } = JSON.parse(
  readFileSync(join(FIXTURE, "expected.json"), "utf8"),
);
const DRIVER = expected.driver;
const amd64: Platform = { os: "linux", architecture: "amd64" };
const inspected = (id: string) => expected.inspect.find((i) => i.Id === id)!;
const hexOf = (id: string) => id.slice("sha256:".length);

/**
 * Docker's familiar names, qualified the way the distribution reference rules do it, written out here
 * rather than taken from imagelet, so the test does not grade imagelet with its own code.
 */
function qualified(name: string): string {
  const slash = name.indexOf("/");
  if (slash < 0) return `docker.io/library/${name}`;
  const first = name.slice(0, slash);
  return first === "localhost" || /[.:]/.test(first) ? name : `docker.io/${name}`;
}

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

/** A writable copy of the fixture's Docker root. */
function copyRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-docker-"));
  temps.push(dir);
  const root = join(dir, "root");
  cpSync(join(FIXTURE, "root"), root, { recursive: true });
  return root;
}

function store(root: string, opts: Partial<DockerStoreOptions> = {}) {
  const log = memoryLogger();
  const notices: (string | undefined)[] = [];
  const ctx: BackendContext = { name: "test", log, baseDir: "/", platform: amd64, setNotice: (n) => void notices.push(n) };
  return { store: new DockerStore({ root, ...opts }, ctx), log, notices };
}

const driverDir = (root: string) => join(root, "image", DRIVER);
const configPath = (root: string, id: string) => join(driverDir(root), "imagedb/content/sha256", hexOf(id));
const byId = (records: readonly ImageRecord[], id: string) => records.find((r) => r.id === id);
const warned = (log: ReturnType<typeof memoryLogger>, needle: string, path?: string) =>
  log.lines.filter((l) => l.level === "warn" && l.msg.includes(needle) && (path === undefined || l.fields?.path === path));

/** Rewrites repositories.json the way Docker does (temp file + rename), so its mtime and inode change. */
function editRepositories(root: string, edit: (repos: Record<string, Record<string, string>>) => void): void {
  const path = join(driverDir(root), "repositories.json");
  const doc = JSON.parse(readFileSync(path, "utf8"));
  edit(doc.Repositories);
  writeFileSync(`${path}.tmp`, JSON.stringify(doc));
  renameSync(`${path}.tmp`, path);
}

/** The images `docker images` (without -a) shows, by ID. */
const shownIds = () => [...new Set(expected.images.map((r) => r.ID))].sort();
const hello = () => expected.inspect.find((i) => i.RepoTags.includes("busybox-alias:mytag"))!;
const tool = () => expected.inspect.find((i) => i.RepoDigests.length > 0)!;
const empty = () => expected.inspect.find((i) => i.Size === 0)!;

describe("agrees with docker", () => {
  test("the fixture has the cases the tests rely on", async () => {
    expect(hello()).toBeDefined();
    expect(tool()).toBeDefined();
    expect(empty()).toBeDefined();
    // A dangling build result (untagged, no children) and hidden intermediates.
    expect(expected.images.some((r) => r.Repository === "<none>")).toBe(true);
    expect(new Set(expected.imagesAll.map((r) => r.ID)).size).toBeGreaterThan(shownIds().length);
  });

  test("the same image IDs as `docker images`; intermediates that `docker images -a` adds stay hidden", async () => {
    const ids = (await store(join(FIXTURE, "root")).store.list()).map((r) => r.id).sort();
    expect(ids).toEqual(shownIds());
    const hidden = [...new Set(expected.imagesAll.map((r) => r.ID))].filter((id) => !ids.includes(id));
    expect(hidden.length).toBeGreaterThan(0);
    // Each hidden one is untagged and some image's parent, which is why docker hides it.
    for (const id of hidden) {
      expect(inspected(id).RepoTags).toEqual([]);
      expect(expected.inspect.some((i) => i.Parent === id)).toBe(true);
    }
  });

  test("tags, repo digests, size, user and labels match docker image inspect (names normalized)", async () => {
    const { store: s } = store(join(FIXTURE, "root"));
    const records = await s.list();
    for (const id of shownIds()) {
      const want = inspected(id);
      const r = byId(records, id)!;
      expect(r.repoTags.slice().sort()).toEqual(want.RepoTags.map(qualified).sort());
      // Not Docker's RepoDigests (the registry's manifest, whose compressed layers Docker did not
      // keep): each repository the image is named in, at the manifest the mirror serves (docs/mirror.md).
      const names = [...want.RepoTags, ...want.RepoDigests].map(qualified);
      expect(r.repoDigests).toEqual(names.length === 0 ? [] : await writtenRepoDigestsOf((i, d) => s.content(i, d, call()), id, names));
      for (const original of want.RepoDigests) expect(r.repoDigests).not.toContain(qualified(original));
      expect(r.size).toBe(want.Size > 0 ? want.Size : want.ConfigBytes);
      expect(r.user ?? "").toBe(want.User);
      expect(r.labels ?? {}).toEqual(want.Labels ?? {});
      expect(r.platform).toMatchObject(amd64);
      expect(r.kind).toBe("oci");
    }
  });

  test("a familiar short name becomes docker.io/library/…", async () => {
    const r = byId(await store(join(FIXTURE, "root")).store.list(), hello().Id)!;
    expect(r.repoTags).toContain("docker.io/library/busybox-alias:mytag");
    expect(r.repoTags).not.toContain("busybox-alias:mytag");
  });

  test("the digested entry Docker recorded on push names a repository, listed at the written manifest's digest", async () => {
    const r = byId(await store(join(FIXTURE, "root")).store.list(), tool().Id)!;
    const row = expected.images.find((x) => x.ID === tool().Id && x.Digest !== "<none>")!;
    expect(r.repoDigests).toContain(`${row.Repository}@${r.target!.digest}`);
    expect(r.repoDigests).not.toContain(`${row.Repository}@${row.Digest}`);
  });

  test("size is the layerdb sum Docker reports; never 0: the config's byte length when every layer is empty", async () => {
    const records = (await store(join(FIXTURE, "root")).store.list());
    expect(empty().Size).toBe(0);
    expect(empty().Layers.length).toBeGreaterThan(0);
    expect(byId(records, empty().Id)!.size).toBe(empty().ConfigBytes);
    expect(records.every((r) => r.size > 0)).toBe(true);
  });

  test("chain IDs name the layerdb directories docker wrote", async () => {
    for (const i of expected.inspect) {
      for (const chainId of chainIds(i.Layers)) {
        expect(readFileSync(join(driverDir(join(FIXTURE, "root")), "layerdb/sha256", hexOf(chainId), "diff"), "utf8")).toStartWith("sha256:");
      }
    }
  });

  test("status() returns the listed image with its config", async () => {
    const { store: s } = store(join(FIXTURE, "root"));
    await s.list();
    expect((s.status(hello().Id)?.config as { config?: { User?: string } }).config?.User).toBe("app");
    expect(s.status(`sha256:${"0".repeat(64)}`)).toBeUndefined();
  });
});

describe("store modes and drivers", () => {
  function bareRoot(): string {
    const dir = mkdtempSync(join(tmpdir(), "imagelet-docker-"));
    temps.push(dir);
    return dir;
  }

  test("containerd image store (containerd/ and no repositories.json): a notice, a log line and no images, not an error", async () => {
    const root = bareRoot();
    mkdirSync(join(root, "containerd", "daemon"), { recursive: true });
    mkdirSync(join(root, "image"));
    const { store: s, notices, log } = store(root);
    expect(await s.list()).toEqual([]);
    expect(notices.at(-1)).toBe(
      `Docker at ${root} uses the containerd image store; no images there yet (no ${join(root, "containerd/daemon/io.containerd.metadata.v1.bolt/meta.db")})`,
    );
    expect(log.lines.some((l) => l.msg.includes("containerd image store") && l.fields?.path === root)).toBe(true);
  });

  test("daemon.json with features.containerd-snapshotter true wins over leftover classic metadata", async () => {
    const root = copyRoot();
    const daemonConfig = join(root, "..", "daemon.json");
    writeFileSync(daemonConfig, JSON.stringify({ features: { "containerd-snapshotter": true } }));
    const { store: s, notices } = store(root, { daemonConfig });
    expect(await s.list()).toEqual([]);
    expect(notices.at(-1)).toContain("uses the containerd image store");
    // Switched back: the classic store is served again and the notice is cleared.
    writeFileSync(daemonConfig, JSON.stringify({ features: { "containerd-snapshotter": false } }));
    expect((await s.list()).length).toBe(shownIds().length);
    expect(notices.at(-1)).toBeUndefined();
  });

  test("a root with neither a classic store nor containerd state is a store problem naming the path", async () => {
    const root = bareRoot();
    mkdirSync(join(root, "image"));
    await expect(store(root).store.list()).rejects.toThrow(StoreProblem);
    await expect(store(root).store.list()).rejects.toThrow(/repositories.json not found/);
  });

  test("the daemon.json default applies only to /var/lib/docker", async () => {
    const ctx: BackendContext = { name: "t", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice() {} };
    const other = docker.create({ path: "/srv/docker" }, ctx) as DockerStore;
    expect((other as unknown as { opts: DockerStoreOptions }).opts.daemonConfig).toBeUndefined();
    const system = docker.create({ path: "/var/lib/docker" }, ctx) as DockerStore;
    expect((system as unknown as { opts: DockerStoreOptions }).opts.daemonConfig).toBe("/etc/docker/daemon.json");
  });

  test("several driver directories: the newest repositories.json is read and the choice logged; `driver` forces one", async () => {
    const root = copyRoot();
    const old = join(root, "image", "overlay2");
    mkdirSync(join(old, "imagedb/content/sha256"), { recursive: true });
    writeFileSync(join(old, "repositories.json"), '{"Repositories":{}}');
    utimesSync(join(old, "repositories.json"), new Date(1000), new Date(1000));
    const { store: s, log } = store(root);
    expect((await s.list()).length).toBe(shownIds().length);
    expect(warned(log, `reading ${DRIVER} (the newest), not overlay2`)).toHaveLength(1);
    expect(await store(root, { driver: "overlay2" }).store.list()).toEqual([]);
  });

  test("options: path is required; driver must be a plain name", async () => {
    expect(docker.options.path.required).toBe(true);
    const ctx: BackendContext = { name: "t", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice() {} };
    expect(() => docker.create({ path: "/x", driver: "../etc" }, ctx)).toThrow(/driver/);
  });
});

describe("change detection", () => {
  test("an unchanged store returns the same array; a retag or removal is seen", async () => {
    const root = copyRoot();
    const { store: s } = store(root);
    const a = await s.list();
    expect(await s.list()).toBe(a);
    editRepositories(root, (repos) => {
      repos["example.com/edge/renamed"] = { "example.com/edge/renamed:9": hello().Id };
    });
    const b = await s.list();
    expect(b).not.toBe(a);
    expect(byId(b, hello().Id)!.repoTags).toContain("example.com/edge/renamed:9");
    // `docker rmi`: names go first, then the config.
    editRepositories(root, (repos) => {
      delete repos["example.com/edge/empty"];
    });
    unlinkSync(configPath(root, empty().Id));
    expect(byId(await s.list(), empty().Id)).toBeUndefined();
  });

  test("watch() reports a replaced repositories.json", async () => {
    const root = copyRoot();
    const { store: s } = store(root);
    await s.list();
    let stop = () => {};
    const changed = new Promise<boolean>((done) => {
      stop = s.watch(() => done(true));
      setTimeout(() => done(false), 3000);
    });
    editRepositories(root, (repos) => {
      repos.x = { "x:1": hello().Id };
    });
    expect(await changed).toBe(true);
    stop();
  });
});

describe("damaged and hostile stores", () => {
  test("a corrupt or truncated repositories.json throws with its path (the registry keeps the last view); fixed, it is read again", async () => {
    const root = copyRoot();
    const path = join(driverDir(root), "repositories.json");
    const good = readFileSync(path, "utf8");
    const { store: s } = store(root);
    expect((await s.list()).length).toBe(shownIds().length);
    writeFileSync(path, good.slice(0, 50));
    let problem: unknown;
    try {
      await await s.list();
    } catch (e) {
      problem = e;
    }
    expect(problem).toBeInstanceOf(StoreProblem);
    expect((problem as StoreProblem).path).toBe(path);
    expect((problem as StoreProblem).message).toMatch(/not valid JSON/);
    writeFileSync(path, good);
    expect((await s.list()).length).toBe(shownIds().length);
  });

  test("bad repositories.json entries are skipped and logged once; the rest is served", async () => {
    const root = copyRoot();
    editRepositories(root, (repos) => {
      repos["Bad Name"] = { "Bad Name:1": hello().Id };
      repos.ghost = { "ghost:1": `sha256:${"e".repeat(64)}` };
      repos.notid = { "notid:1": "../../etc/passwd" };
    });
    const { store: s, log } = store(root);
    const path = join(driverDir(root), "repositories.json");
    expect((await s.list()).length).toBe(shownIds().length);
    expect(warned(log, '"Bad Name:1" is not a reference', path)).toHaveLength(1);
    expect(warned(log, `names sha256:${"e".repeat(64)}, which is not in imagedb`, path)).toHaveLength(1);
    expect(warned(log, "not an image ID", path)).toHaveLength(1);
    // A rescan (new mtime) does not repeat the lines.
    editRepositories(root, () => {});
    await s.list();
    expect(warned(log, '"Bad Name:1" is not a reference')).toHaveLength(1);
  });

  test("a digested entry added to repositories.json adds its repository, normalized, at the written manifest's digest", async () => {
    const root = copyRoot();
    const digest = `sha256:${"d".repeat(64)}`;
    editRepositories(root, (repos) => {
      repos["pinned-only"] = { [`pinned-only@${digest}`]: hello().Id };
    });
    const r = byId(await store(root).store.list(), hello().Id)!;
    expect(r.repoDigests).toContain(`docker.io/library/pinned-only@${r.target!.digest}`);
    expect(r.repoDigests.some((d) => d.endsWith(digest))).toBe(false);
  });

  test("a config whose content does not match its name is skipped and logged with the path", async () => {
    const root = copyRoot();
    const path = configPath(root, hello().Id);
    writeFileSync(path, readFileSync(path, "utf8").replace('"app"', '"root"'));
    const { store: s, log } = store(root);
    const ids = (await s.list()).map((r) => r.id);
    expect(ids).not.toContain(hello().Id);
    expect(ids.length).toBe(shownIds().length - 1);
    expect(warned(log, "does not match its name", path)).toHaveLength(1);
    expect(warned(log, "which is not in imagedb")).toHaveLength(0);
  });

  test("a truncated config is skipped the same way", async () => {
    const root = copyRoot();
    const path = configPath(root, tool().Id);
    writeFileSync(path, readFileSync(path, "utf8").slice(0, 30));
    const { store: s, log } = store(root);
    expect((await s.list()).map((r) => r.id)).not.toContain(tool().Id);
    expect(warned(log, `image ${tool().Id} skipped`, path)).toHaveLength(1);
  });

  test("a missing layerdb size file skips that image (as Docker does), logged with the path; restored, it comes back", async () => {
    const root = copyRoot();
    const chain = chainIds(hello().Layers).at(-1)!;
    const path = join(driverDir(root), "layerdb/sha256", hexOf(chain), "size");
    const saved = readFileSync(path);
    unlinkSync(path);
    const { store: s, log } = store(root);
    expect((await s.list()).map((r) => r.id)).not.toContain(hello().Id);
    expect((await s.list()).length).toBe(shownIds().length - 1);
    expect(warned(log, `image ${hello().Id} skipped: cannot read: ENOENT`, path)).toHaveLength(1);
    writeFileSync(path, saved);
    expect((await s.list()).map((r) => r.id)).toContain(hello().Id);
  });

  test("a layerdb diff that is not the config's diff_id: listed, not on the mirror, logged; mended, served; then read once per chain ID", async () => {
    const root = copyRoot();
    const chain = chainIds(hello().Layers).at(-1)!;
    const path = join(driverDir(root), "layerdb/sha256", hexOf(chain), "diff");
    const saved = readFileSync(path);
    writeFileSync(path, `sha256:${"0".repeat(64)}`);
    const { store: s, log } = store(root);
    const first = byId(await s.list(), hello().Id)!;
    expect(first.target).toBeUndefined();
    expect(warned(log, `image ${hello().Id} is not served on the mirror: layer ${chain} records diff`, path)).toHaveLength(1);
    writeFileSync(path, saved);
    editRepositories(root, () => {});
    expect(byId(await s.list(), hello().Id)!.target).toBeDefined();
    // A chain ID names one layer content for good: once it agreed, later scans do not read it again.
    writeFileSync(path, `sha256:${"0".repeat(64)}`);
    editRepositories(root, () => {});
    expect(byId(await s.list(), hello().Id)!.target).toBeDefined();
    expect(warned(log, "records diff")).toHaveLength(1);
  });

  test("a config symlinked outside the store is refused with the path, even with the right content", async () => {
    const root = copyRoot();
    const path = configPath(root, hello().Id);
    const outside = join(root, "..", "outside-config");
    cpSync(path, outside);
    unlinkSync(path);
    symlinkSync(outside, path);
    const { store: s, log } = store(root);
    expect((await s.list()).map((r) => r.id)).not.toContain(hello().Id);
    expect(warned(log, "resolves outside the store", path)).toHaveLength(1);
  });

  test("a symlink loop in imagedb is skipped and logged", async () => {
    const root = copyRoot();
    const path = configPath(root, hello().Id);
    unlinkSync(path);
    symlinkSync(path, path);
    const { store: s, log } = store(root);
    expect((await s.list()).length).toBe(shownIds().length - 1);
    expect(warned(log, "ELOOP", path)).toHaveLength(1);
  });

  test("a layerdb size that is not a number skips the image", async () => {
    const root = copyRoot();
    const path = join(driverDir(root), "layerdb/sha256", hexOf(chainIds(tool().Layers).at(-1)!), "size");
    writeFileSync(path, "lots");
    const { store: s, log } = store(root);
    expect((await s.list()).map((r) => r.id)).not.toContain(tool().Id);
    expect(warned(log, "is not a byte count", path)).toHaveLength(1);
  });

  test("a removed root or content directory throws a store problem naming it", async () => {
    const root = copyRoot();
    const { store: s } = store(root);
    await s.list();
    rmSync(join(driverDir(root), "imagedb/content/sha256"), { recursive: true });
    await expect(s.list()).rejects.toThrow(StoreProblem);
    rmSync(root, { recursive: true });
    let problem: unknown;
    try {
      await await s.list();
    } catch (e) {
      problem = e;
    }
    expect(problem).toBeInstanceOf(StoreProblem);
    expect((problem as StoreProblem).path).toBe(root);
  });
});
