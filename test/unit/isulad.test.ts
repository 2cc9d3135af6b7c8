// The isulad backend on the committed iSulad fixture (scripts/make-fixtures-isulad),
// checked against what the tools said about it (test/fixtures/isulad/expected.json),
// and on damaged copies of it.
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { OptionError, type BackendContext, type ImageRecord } from "../../src/backend/contract";
import { StoreProblem } from "../../src/backends/common/files";
import isulad, { IsuladStore } from "../../src/backends/isulad/index";
import { embeddedImageTag, parseEmbeddedManifest, signatureFileOf } from "../../src/backends/isulad/embedded";
import { memoryLogger } from "./helpers";

const FIXTURE = resolve(import.meta.dir, "../fixtures/isulad");
interface Expected {
  embedded: { manifest: string; id: string; tag: string; size: number }[];
  skipped: string[];
  oci: { id: string; digest: string; tags: string[]; repoDigests: string[]; size: number; driver: string };
}
const expected: Expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8"));
const TEST = expected.embedded.find((e) => e.manifest === "test.manifest")!;
const TOOLS = expected.embedded.find((e) => e.manifest === "tools.manifest")!;
const OCI = expected.oci;
const IMAGE_DIR = (graph: string) => join(graph, "storage", "vfs-images", OCI.id.slice(7));

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) {
    chmodSync(t, 0o755);
    rmSync(t, { recursive: true, force: true });
  }
});

/** A writable copy of the fixture: { graph, manifests, dir }. */
function copy(): { graph: string; manifests: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-isulad-"));
  temps.push(dir);
  cpSync(FIXTURE, join(dir, "isulad"), { recursive: true });
  return { graph: join(dir, "isulad", "graph"), manifests: join(dir, "isulad", "embedded"), dir };
}

function context() {
  const log = memoryLogger();
  const notices: (string | undefined)[] = [];
  const ctx: BackendContext = {
    name: "isl",
    log,
    baseDir: "/",
    platform: { os: "linux", architecture: "amd64" },
    setNotice: (n) => void notices.push(n),
  };
  return { ctx, log, notices };
}

function store(graph: string, manifestsDir?: string, driver?: string) {
  const { ctx, log, notices } = context();
  return { store: new IsuladStore({ root: graph, manifestsDir, driver }, ctx), log, notices };
}

const fixtureStore = () => store(join(FIXTURE, "graph"), join(FIXTURE, "embedded"));
const byId = (records: readonly ImageRecord[], id: string) => records.find((r) => r.id === id);
const ids = (records: readonly ImageRecord[]) => records.map((r) => r.id).sort();
/** Warnings that name `path`, to check "logged once, with the path". */
const warningsAbout = (log: ReturnType<typeof memoryLogger>, path: string) =>
  log.lines.filter((l) => l.level === "warn" && l.fields?.path === path && l.fields?.backend === "isl");

const sha256 = (bytes: Buffer | string) => createHash("sha256").update(bytes).digest("hex");

/** Writes a manifest and a matching .sgn into `dir`; returns the manifest's image ID. */
function writeManifest(dir: string, name: string, manifest: unknown, sgn: "match" | "none" | string = "match"): string {
  const text = JSON.stringify(manifest);
  writeFileSync(join(dir, `${name}.manifest`), text);
  const id = `sha256:${sha256(text)}`;
  if (sgn === "match") writeFileSync(join(dir, `${name}.sgn`), id);
  else if (sgn !== "none") writeFileSync(join(dir, `${name}.sgn`), sgn);
  return id;
}

function manifest(over: Record<string, unknown> = {}, layers?: unknown[]): Record<string, unknown> {
  return {
    schemaVersion: 1,
    mediaType: "application/embedded.manifest+json",
    imageName: "unit:v1",
    created: "2024-01-02T03:04:05.000000000Z",
    config: { ENV: [], ENTRYPOINT: ["/bin/sh"], WORKDIR: "/" },
    layers: layers ?? [
      { mediaType: "application/bind.image.rootfs.diff.dir", size: 0, digest: "", pathInHost: "/", pathInContainer: "" },
      { mediaType: "application/squashfs.image.rootfs.diff.img", size: 1, digest: "", pathInHost: "app.img", pathInContainer: "/app" },
    ],
    ...over,
  };
}

/** An iSulad-shaped sqlite.db made with the statements of db_all.c. */
function writeDb(file: string, rows: { type?: string; size: number; digest: string; config?: string; names: string[] }[]): void {
  const db = new Database(file, { create: true });
  db.exec(
    "CREATE TABLE image_info(image_type TEXT,size REAL,layer_num INTERGER,top_chainid TEXT,top_cacheid TEXT,config_digest TEXT," +
      "config_cacheid TEXT,config_path TEXT,created TEXT,mount_string TEXT,config TEXT,UNIQUE(config_digest,config_path))",
  );
  db.exec("CREATE TABLE image_names(image_name TEXT PRIMARY KEY,image_rowid INTERGER,UNIQUE(image_name,image_rowid))");
  rows.forEach((r, i) => {
    const path = `/opt/embedded/${i}.manifest`;
    db.query("INSERT INTO image_info VALUES (?1, ?2, 0, '', '', ?3, '', ?4, '2024-01-02T03:04:05Z', '/', ?5)").run(
      r.type ?? "embedded",
      r.size,
      r.digest,
      path,
      r.config ?? "{}",
    );
    for (const name of r.names) {
      db.query("INSERT INTO image_names SELECT ?1, rowid FROM image_info WHERE config_digest = ?2 AND config_path = ?3").run(name, r.digest, path);
    }
  });
  db.close();
}

describe("the fixture agrees with the tools", () => {
  test("embedded images: manifest digest as ID, the image name as tag, no repo digest, layer file sizes", () => {
    const records = fixtureStore().store.list();
    for (const e of [TEST, TOOLS]) {
      expect(byId(records, e.id)).toMatchObject({ repoTags: [e.tag], repoDigests: [], size: e.size, kind: "embedded" });
    }
  });

  test("the OCI image: ID, iSulad's stripped names normalized, repo@digest per tag, stored size, config", () => {
    const r = byId(fixtureStore().store.list(), OCI.id)!;
    expect(r.kind).toBe("oci");
    expect(r.repoTags.sort()).toEqual(OCI.tags);
    expect(r.repoDigests.sort()).toEqual(OCI.repoDigests);
    expect(r.size).toBe(OCI.size);
    expect(r.user).toBe("app");
    expect(r.labels).toEqual({ "org.example.team": "edge", "org.opencontainers.image.title": "hello" });
    expect(r.annotations).toEqual({ "org.example.note": "manifest-annotation" });
    expect((r.config as { config: { User: string } }).config.User).toBe("app");
  });

  test("the same embedded image in sqlite.db and in the directory is one record", () => {
    const records = fixtureStore().store.list();
    expect(records.filter((r) => r.id === TEST.id)).toHaveLength(1);
    expect(ids(records)).toEqual([TEST.id, TOOLS.id, OCI.id].sort());
  });

  test("bad and missing .sgn are skipped, each logged once with its path", () => {
    const { store: s, log } = fixtureStore();
    s.list();
    s.list();
    for (const skipped of expected.skipped) expect(warningsAbout(log, join(FIXTURE, "embedded", skipped))).toHaveLength(1);
  });

  test("status() serves what list() gave", () => {
    const { store: s } = fixtureStore();
    s.list();
    expect(s.status(OCI.id)?.id).toBe(OCI.id);
    expect(s.status(TEST.id)?.kind).toBe("embedded");
  });
});

describe("embedded manifest validation (lim.c, load.c)", () => {
  const ok = manifest();
  const invalid: [string, unknown][] = [
    ["schemaVersion 2", manifest({ schemaVersion: 2 })],
    ["a Docker mediaType", manifest({ mediaType: "application/vnd.docker.distribution.manifest.v2+json" })],
    ["no layers", manifest({}, [])],
    ["126 layers", manifest({}, Array.from({ length: 126 }, () => (ok.layers as unknown[])[1]))],
    ["a name without a tag", manifest({ imageName: "unit" })],
    ["the reserved name none", manifest({ imageName: "none:latest" })],
    ["an uppercase repository", manifest({ imageName: "Unit:v1" })],
    ["a digest for a tag", manifest({ imageName: "unit@sha256:" + "a".repeat(64) })],
    ["created without a time zone", manifest({ created: "2024-01-02T03:04:05" })],
    ["a relative first layer", manifest({}, [{ mediaType: "application/bind.image.rootfs.diff.dir", size: 0, pathInHost: "rootfs", pathInContainer: "" }])],
    ["a first directory layer other than /", manifest({}, [{ mediaType: "application/bind.image.rootfs.diff.dir", size: 0, pathInHost: "/srv", pathInContainer: "" }])],
    [
      "an absolute later layer",
      manifest({}, [(ok.layers as unknown[])[0], { mediaType: "application/squashfs.image.rootfs.diff.img", size: 1, pathInHost: "/app.img", pathInContainer: "/app" }]),
    ],
    [
      "a relative pathInContainer",
      manifest({}, [(ok.layers as unknown[])[0], { mediaType: "application/squashfs.image.rootfs.diff.img", size: 1, pathInHost: "app.img", pathInContainer: "app" }]),
    ],
    ["an unknown layer type", manifest({}, [{ mediaType: "application/x-tar", size: 0, pathInHost: "/", pathInContainer: "" }])],
    ["a negative layer size", manifest({}, [(ok.layers as unknown[])[0], { ...((ok.layers as Record<string, unknown>[])[1] ?? {}), size: -1 }])],
  ];
  for (const [what, m] of invalid) {
    test(`refuses ${what}`, () => {
      expect(() => parseEmbeddedManifest(m, "/m.manifest")).toThrow(StoreProblem);
    });
  }

  test("accepts the reference notes' example shape", () => {
    expect(parseEmbeddedManifest(ok, "/m.manifest").imageName).toBe("unit:v1");
    expect(parseEmbeddedManifest(JSON.parse(readFileSync(join(FIXTURE, "embedded", "test.manifest"), "utf8")), "x").layers).toHaveLength(2);
  });

  test("names are name:tag, normalized; the .sgn is the manifest's basename with .sgn", () => {
    expect(embeddedImageTag("test:v1")).toBe("docker.io/library/test:v1");
    expect(embeddedImageTag("localhost:5000/edge/app:1.0")).toBe("localhost:5000/edge/app:1.0");
    expect(() => embeddedImageTag("localhost:5000/edge/app")).toThrow();
    expect(signatureFileOf("/d/test.manifest")).toBe("/d/test.sgn");
  });
});

describe("embedded manifests directory", () => {
  function dirWith(build: (dir: string) => void) {
    const { manifests, graph } = copy();
    for (const f of ["test", "tools", "bad-sgn", "no-sgn"]) {
      rmSync(join(manifests, `${f}.manifest`));
      rmSync(join(manifests, `${f}.sgn`), { force: true });
    }
    rmSync(join(graph, "sqlite.db"));
    rmSync(join(graph, "storage"), { recursive: true });
    build(manifests);
    return { ...store(graph, manifests), manifests };
  }

  test("size is the sum of the layer files' sizes, not the declared sizes (lim.c valid_manifest_and_get_size)", () => {
    let id = "";
    const { store: s } = dirWith((d) => (id = writeManifest(d, "unit", manifest())));
    expect(s.list()).toMatchObject([{ id, repoTags: ["docker.io/library/unit:v1"], repoDigests: [], size: TEST.size, kind: "embedded" }]);
  });

  test("a manifest whose only layer is the host's / counts its own bytes, so size stays > 0", () => {
    let id = "";
    const m = manifest({}, [(manifest().layers as unknown[])[0]]);
    const { store: s } = dirWith((d) => (id = writeManifest(d, "root", m)));
    expect(s.list()).toEqual([expect.objectContaining({ id, size: JSON.stringify(m).length })]);
  });

  test("a .sgn with a trailing newline is accepted; a missing or wrong one skips the manifest", () => {
    let good = "";
    const { store: s, log, manifests } = dirWith((d) => {
      good = writeManifest(d, "good", manifest({ imageName: "good:v1" }));
      writeFileSync(join(d, "good.sgn"), `${good}\n`);
      writeManifest(d, "nosgn", manifest({ imageName: "nosgn:v1" }), "none");
      writeManifest(d, "wrong", manifest({ imageName: "wrong:v1" }), `sha256:${"0".repeat(64)}`);
    });
    expect(ids(s.list())).toEqual([good]);
    expect(warningsAbout(log, join(manifests, "nosgn.manifest"))).toHaveLength(1);
    expect(warningsAbout(log, join(manifests, "wrong.manifest"))[0]!.msg).toContain("does not hold the manifest's digest");
  });

  test("a layer digest is checked against the file; a wrong one skips the manifest", () => {
    const layer0 = (manifest().layers as unknown[])[0];
    const layer = (digest: string) => ({ mediaType: "application/squashfs.image.rootfs.diff.img", size: 1, digest, pathInHost: "app.img", pathInContainer: "/app" });
    const appDigest = `sha256:${sha256(readFileSync(join(FIXTURE, "embedded", "app.img")))}`;
    let good = "";
    const { store: s, log, manifests } = dirWith((d) => {
      good = writeManifest(d, "good", manifest({ imageName: "good:v1" }, [layer0, layer(appDigest)]));
      writeManifest(d, "bad", manifest({ imageName: "bad:v1" }, [layer0, layer(`sha256:${"1".repeat(64)}`)]));
    });
    expect(ids(s.list())).toEqual([good]);
    expect(warningsAbout(log, join(manifests, "bad.manifest"))[0]!.msg).toContain("does not match its digest");
  });

  test("a missing layer file, or one that leaves the directory, skips the manifest", () => {
    const { store: s, log, manifests } = dirWith((d) => {
      writeManifest(d, "gone", manifest({ imageName: "gone:v1" }, [(manifest().layers as unknown[])[0], { ...((manifest().layers as Record<string, unknown>[])[1] ?? {}), pathInHost: "gone.img" }]));
      writeManifest(d, "escape", manifest({ imageName: "escape:v1" }, [(manifest().layers as unknown[])[0], { ...((manifest().layers as Record<string, unknown>[])[1] ?? {}), pathInHost: "../outside.img" }]));
    });
    writeFileSync(join(manifests, "..", "outside.img"), "x");
    expect(s.list()).toEqual([]);
    expect(warningsAbout(log, join(manifests, "gone.manifest"))).toHaveLength(1);
    expect(warningsAbout(log, join(manifests, "escape.manifest"))[0]!.msg).toContain("outside the store");
  });

  test("a manifest symlinked from outside the directory is refused; the directory vanishing is logged, the rest served", () => {
    const { graph, manifests, dir } = copy();
    const outside = join(dir, "outside.manifest");
    renameSync(join(manifests, "tools.manifest"), outside);
    symlinkSync(outside, join(manifests, "tools.manifest"));
    const { store: s, log } = store(graph, manifests);
    expect(ids(s.list())).toEqual([TEST.id, OCI.id].sort());
    expect(warningsAbout(log, join(manifests, "tools.manifest"))[0]!.msg).toContain("outside the store");
    rmSync(manifests, { recursive: true });
    expect(ids(s.list())).toEqual([TEST.id, OCI.id].sort()); // test:v1 is still in sqlite.db
    expect(warningsAbout(log, manifests)).toHaveLength(1);
  });
});

describe("sqlite.db", () => {
  function graphWithDb(rows: Parameters<typeof writeDb>[1]) {
    const { graph } = copy();
    rmSync(join(graph, "sqlite.db"));
    writeDb(join(graph, "sqlite.db"), rows);
    return { graph, ...store(graph) };
  }
  const digest = (c: string) => `sha256:${c.repeat(64)}`;

  test("the REAL size comes back as a float and is rounded; several names of one row are its tags", () => {
    const { store: s } = graphWithDb([{ size: 4096.6, digest: digest("a"), names: ["one:v1", "two:v2"] }]);
    expect(byId(s.list(), digest("a"))).toMatchObject({ size: 4097, repoTags: ["docker.io/library/one:v1", "docker.io/library/two:v2"], repoDigests: [], kind: "embedded" });
  });

  test("a digest stored without sha256: is the same ID (embedded_image.c strips the prefix)", () => {
    const { store: s } = graphWithDb([{ size: 10, digest: "b".repeat(64), names: ["b:v1"] }]);
    expect(byId(s.list(), digest("b"))?.size).toBe(10);
  });

  test("size 0 falls back to the manifest text's bytes", () => {
    const { store: s } = graphWithDb([{ size: 0, digest: digest("c"), config: '{"x":1}', names: ["c:v1"] }]);
    expect(byId(s.list(), digest("c"))?.size).toBe(7);
  });

  test("bad rows are skipped and logged: another image type, a bad digest, no name, a bad name", () => {
    const { store: s, log, graph } = graphWithDb([
      { type: "oci", size: 1, digest: digest("d"), names: ["d:v1"] },
      { size: 1, digest: "md5:abc", names: ["e:v1"] },
      { size: 1, digest: digest("f"), names: [] },
      { size: 1, digest: digest("1"), names: ["Bad Name", "good:v1"] },
    ]);
    const records = s.list();
    expect(records.filter((r) => r.kind === "embedded")).toEqual([expect.objectContaining({ id: digest("1"), repoTags: ["docker.io/library/good:v1"] })]);
    expect(log.lines.filter((l) => l.level === "warn" && String(l.fields?.path).startsWith(join(graph, "sqlite.db")))).toHaveLength(4);
  });

  test("missing tables: logged once, the OCI store still served", () => {
    const { graph } = copy();
    rmSync(join(graph, "sqlite.db"));
    new Database(join(graph, "sqlite.db"), { create: true }).close();
    writeFileSync(join(graph, "sqlite.db"), readFileSync(join(graph, "sqlite.db")));
    const db = new Database(join(graph, "sqlite.db"));
    db.exec("CREATE TABLE other(x)");
    db.close();
    const { store: s, log } = store(graph);
    expect(ids(s.list())).toEqual([OCI.id]);
    s.list();
    expect(warningsAbout(log, join(graph, "sqlite.db"))).toHaveLength(1);
    expect(warningsAbout(log, join(graph, "sqlite.db"))[0]!.msg).toContain("no such table");
  });

  test("a corrupt database file: logged once, the rest served", () => {
    const { graph, manifests } = copy();
    writeFileSync(join(graph, "sqlite.db"), "not a database ".repeat(300));
    const { store: s, log } = store(graph, manifests);
    expect(ids(s.list())).toEqual([TEST.id, TOOLS.id, OCI.id].sort());
    s.list();
    expect(warningsAbout(log, join(graph, "sqlite.db"))).toHaveLength(1);
  });

  test("a sqlite.db symlinked from outside the graph root is refused", () => {
    const { graph, dir } = copy();
    renameSync(join(graph, "sqlite.db"), join(dir, "elsewhere.db"));
    symlinkSync(join(dir, "elsewhere.db"), join(graph, "sqlite.db"));
    const { store: s, log } = store(graph);
    expect(ids(s.list())).toEqual([OCI.id]);
    expect(warningsAbout(log, join(graph, "sqlite.db"))[0]!.msg).toContain("outside the store");
  });
});

describe("OCI image store: bad input", () => {
  test("corrupt images.json: logged once with its path, the embedded images still served", () => {
    const { graph, manifests } = copy();
    const file = join(IMAGE_DIR(graph), "images.json");
    writeFileSync(file, '{"id": "5f95');
    const { store: s, log } = store(graph, manifests);
    expect(ids(s.list())).toEqual([TEST.id, TOOLS.id].sort());
    s.list();
    expect(warningsAbout(log, file)).toHaveLength(1);
  });

  test("a missing config big-data file or layer.json skips the image", () => {
    for (const remove of ["config", "layer"] as const) {
      const { graph } = copy();
      const path =
        remove === "config"
          ? join(IMAGE_DIR(graph), `=${Buffer.from(OCI.id).toString("base64")}`)
          : join(graph, "storage", "vfs-layers", JSON.parse(readFileSync(join(IMAGE_DIR(graph), "images.json"), "utf8")).layer, "layer.json");
      unlinkSync(path);
      const { store: s, log } = store(graph);
      expect(ids(s.list())).toEqual([TEST.id]);
      expect(warningsAbout(log, path)).toHaveLength(1);
    }
  });

  test("an images.json symlinked from outside the store is refused", () => {
    const { graph, dir } = copy();
    const file = join(IMAGE_DIR(graph), "images.json");
    renameSync(file, join(dir, "images.json"));
    symlinkSync(join(dir, "images.json"), file);
    const { store: s, log } = store(graph);
    expect(ids(s.list())).toEqual([TEST.id]);
    expect(warningsAbout(log, file)[0]!.msg).toContain("outside the store");
  });

  test("a layer chain that loops is refused", () => {
    const { graph } = copy();
    const top: string = JSON.parse(readFileSync(join(IMAGE_DIR(graph), "images.json"), "utf8")).layer;
    const layerFile = join(graph, "storage", "vfs-layers", top, "layer.json");
    writeFileSync(layerFile, JSON.stringify({ ...JSON.parse(readFileSync(layerFile, "utf8")), parent: top }));
    const { store: s, log } = store(graph);
    expect(ids(s.list())).toEqual([TEST.id]);
    expect(log.lines.some((l) => l.msg.includes("loops"))).toBe(true);
  });

  // A file the service may not read: covered through the binary run as nobody (test_backend_isulad.py),
  // since as root (CI) every file is readable.

  test("without images.json size, size is big data + layer diff sizes (iSulad's sum, without its -1)", () => {
    const { graph } = copy();
    const file = join(IMAGE_DIR(graph), "images.json");
    const { size, ...rest } = JSON.parse(readFileSync(file, "utf8"));
    writeFileSync(file, JSON.stringify(rest));
    expect(byId(store(graph).store.list(), OCI.id)?.size).toBe(size + 1);
  });

  test("the images directory disappearing is logged once; embedded images are still served", () => {
    const { graph, manifests } = copy();
    const { store: s, log } = store(graph, manifests, "vfs");
    expect(s.list()).toHaveLength(3);
    rmSync(join(graph, "storage"), { recursive: true });
    expect(ids(s.list())).toEqual([TEST.id, TOOLS.id].sort());
    s.list();
    expect(warningsAbout(log, join(graph, "storage", "vfs-images"))).toHaveLength(1);
  });

  test("the graph root removed: list() throws a StoreProblem naming it", () => {
    const { graph } = copy();
    const { store: s } = store(graph);
    s.list();
    rmSync(graph, { recursive: true });
    expect(() => s.list()).toThrow(StoreProblem);
  });

  test("a driver option that is not a driver name is an OptionError", () => {
    const { ctx } = context();
    expect(() => isulad.create({ path: "/x", driver: "../etc" }, ctx)).toThrow(OptionError);
  });
});

describe("change detection", () => {
  test("unchanged stores give the same array; a renamed image, a new manifest and a db change give a new one", () => {
    const { graph, manifests } = copy();
    const { store: s } = store(graph, manifests);
    const first = s.list();
    expect(s.list()).toBe(first); // includes the always-bad .sgn cases: same result, same array

    const file = join(IMAGE_DIR(graph), "images.json");
    const image = JSON.parse(readFileSync(file, "utf8"));
    writeFileSync(`${file}.tmp`, JSON.stringify({ ...image, names: [...image.names, "busybox:stable"] }));
    renameSync(`${file}.tmp`, file); // as util_atomic_write_file does
    const second = s.list();
    expect(second).not.toBe(first);
    expect(byId(second, OCI.id)?.repoTags).toContain("docker.io/library/busybox:stable");

    // The same manifest under another file name is still one image.
    cpSync(join(manifests, "tools.manifest"), join(manifests, "extra.manifest"));
    cpSync(join(manifests, "tools.sgn"), join(manifests, "extra.sgn"));
    writeManifest(manifests, "newer", { ...JSON.parse(readFileSync(join(manifests, "tools.manifest"), "utf8")), imageName: "newer:v1" });
    const third = s.list();
    expect(third).not.toBe(second);
    expect(third.map((r) => r.repoTags).flat()).toContain("docker.io/library/newer:v1");
    expect(third.filter((r) => r.id === TOOLS.id)).toHaveLength(1);

    const db = new Database(join(graph, "sqlite.db"));
    db.exec("INSERT INTO image_names SELECT 'test:alias', rowid FROM image_info");
    db.close();
    const later = new Date(Date.now() + 5000);
    utimesSync(join(graph, "sqlite.db"), later, later);
    const fourth = s.list();
    expect(fourth).not.toBe(third);
    expect(byId(fourth, TEST.id)?.repoTags).toContain("docker.io/library/test:alias");
    expect(s.list()).toBe(fourth);
  });

  test("watch() reports changes in the graph root, the manifests and inside image directories, and stops when asked", async () => {
    const { graph, manifests } = copy();
    const { store: s } = store(graph, manifests);
    s.list();
    let calls = 0;
    const stop = s.watch(() => calls++);
    for (const dir of [graph, manifests, IMAGE_DIR(graph)]) {
      const before = calls;
      writeFileSync(join(dir, "touch.tmp"), "x"); // images.json is replaced this way, inside its image directory
      await Bun.sleep(100);
      expect(calls).toBeGreaterThan(before);
    }
    stop();
    const stopped = calls;
    writeFileSync(join(graph, "after.tmp"), "x");
    await Bun.sleep(100);
    expect(calls).toBe(stopped);
  });
});

describe("the registry mirror", () => {
  test("iSulad's images are not served: no content hook, the reason once in the log and as the notice `imagelet plugins` shows", async () => {
    const { ctx, log, notices } = context();
    const backend = await isulad.create({ path: join(FIXTURE, "graph"), embedded_manifests: join(FIXTURE, "embedded") }, ctx);
    expect("content" in backend).toBe(false);
    const records = await backend.list({ signal: new AbortController().signal });
    await backend.list({ signal: new AbortController().signal });
    expect(records.some((r) => r.kind === "oci")).toBe(true);
    expect(records.every((r) => r.target === undefined)).toBe(true);
    const lines = log.lines.filter((l) => l.msg.includes("not served on the registry mirror"));
    expect(lines).toHaveLength(1);
    expect(lines[0]!.fields).toMatchObject({ backend: "isl", path: join(FIXTURE, "graph") });
    expect(notices.at(-1)).toContain("cannot be re-created byte for byte");
  });

  test("the notice keeps the several-stores notice beside it", () => {
    const { graph } = copy();
    cpSync(join(graph, "storage", "vfs-images"), join(graph, "storage", "overlay-images"), { recursive: true });
    const { store: s, notices } = store(graph);
    s.list();
    expect(notices.at(-1)).toContain("several image stores");
    expect(notices.at(-1)).toContain("not served on the registry mirror");
  });
});
