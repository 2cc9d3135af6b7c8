// The archives backend on tarballs made by skopeo, podman and containerd
// (scripts/make-fixtures-archives), checked against what those tools reported
// about them (test/fixtures/archives/expected.json), and on damaged copies of
// them re-packed with GNU tar.
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { BackendContext, ImageRecord, Platform } from "../../src/backend/contract";
import archives, { ArchiveDirStore } from "../../src/backends/archives/index";
import { normalizeReference } from "../../src/model/reference";
import { validateRecords } from "../../src/registry/validate";
import { ARCHIVE_FIXTURES as FIXTURES, ARCHIVE_STORE as STORE, TempDirs, fixtureStore, openArchives } from "./archive-fixtures";
import { writtenRepoDigestsOf } from "./content-helpers";
import { memoryLogger } from "./helpers";

interface ExpectedImage { id: string; tags: string[]; repoDigest: string | null; user: string; size: number }
interface ExpectedTarball { file: string; format: string; images: ExpectedImage[]; manifestJsonRepoTags?: string[][] }
const expected: ExpectedTarball[] = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8"));
const tarball = (file: string) => expected.find((e) => e.file === file)!;
const HELLO = tarball("hello-docker.tar").images[0]!;
const TOOLS = tarball("tools-docker.tar.gz").images[0]!;
const amd64: Platform = { os: "linux", architecture: "amd64" };

const temps = new TempDirs("imagelet-archives-");
afterEach(() => temps.cleanup());
const tempDir = () => temps.make();
/** A store directory holding copies of the named fixture tarballs. */
const storeDir = (...files: string[]) => fixtureStore(tempDir(), ...files);

const open = openArchives;

const ids = (records: readonly ImageRecord[]) => records.map((r) => r.id).sort();
const byId = (records: readonly ImageRecord[], id: string) => records.find((r) => r.id === id)!;
/** Whether a warning names this path (the tarball, or a member inside it). */
const warned = (log: ReturnType<typeof memoryLogger>, path: string, text?: string) =>
  log.lines.some((l) => l.level === "warn" && String(l.fields?.path).startsWith(path) && (!text || l.msg.includes(text)));

/** Extracts a fixture tarball into a fresh directory, for re-packing altered. */
function unpack(file: string): string {
  const dir = join(tempDir(), "unpacked");
  mkdirSync(dir);
  execFileSync("tar", ["-xf", join(STORE, file), "-C", dir]);
  // skopeo writes members 0444; a non-root run must still be able to alter them.
  execFileSync("chmod", ["-R", "u+w", dir]);
  return dir;
}

function pack(from: string, to: string, ...flags: string[]): void {
  execFileSync("tar", [...flags, "-cf", to, "-C", from, ...readdirSync(from).sort()]);
}

const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));

describe("fixtures agree with the tools that made them", () => {
  for (const t of expected) {
    test(`${t.file} (${t.format}): ids, tags, repo digests, size, user`, async () => {
      const { store: s, log } = open(storeDir(t.file));
      const records = validateRecords(await s.list());
      expect(ids(records)).toEqual([...new Set(t.images.map((i) => i.id))].sort());
      for (const e of t.images) {
        const r = byId(records, e.id);
        // A bare-tag ref.name is a tag of localhost/<tarball name> (docs/backends.md#archives).
        const tags = e.tags.map((tag) => (tag.includes(":") ? tag : `localhost/${t.file.replace(/\.tar(\.gz)?$/, "")}:${tag}`));
        expect([...r.repoTags].sort()).toEqual(tags.map(normalizeReference).sort());
        // A docker-archive keeps no registry manifest: its repo digests name the manifest imagelet writes.
        if (t.format === "docker-archive") expect(r.repoDigests).toEqual(await writtenRepoDigestsOf((id, d) => s.content(id, d), r.id, r.repoTags));
        else expect([...r.repoDigests].sort()).toEqual(r.repoTags.map((tag) => `${tag.slice(0, tag.lastIndexOf(":"))}@${e.repoDigest}`).sort());
        expect(r.size).toBe(e.size);
        expect(r.size).toBeGreaterThan(0);
        expect(r.user ?? "").toBe(e.user);
        expect(r.source).toBe(join(s.root, t.file));
      }
      expect(log.lines.filter((l) => l.level === "warn")).toEqual([]);
    });
  }

  test("a Docker >= 25-shaped tar (oci-layout and manifest.json) is read as an OCI layout", async () => {
    const t = tarball("ctr-export.tar");
    // manifest.json names edge-tools familiarly and has no digests; index.json's names and digests win.
    expect(t.manifestJsonRepoTags).toEqual([["example.com/edge/hello:1.0"], ["edge-tools:2.0"]]);
    const records = await open(storeDir(t.file)).store.list();
    expect(byId(records, TOOLS.id).repoDigests).toEqual([`docker.io/library/edge-tools@${t.images[1]!.repoDigest}`]);
  });

  test("the whole directory: one image per ID, the union of every tarball's tags and digests", async () => {
    const dir = storeDir(...expected.map((e) => e.file));
    const records = validateRecords(await open(dir).store.list());
    expect(ids(records)).toEqual([HELLO.id, TOOLS.id].sort());
    const allTags = (id: string) => [...new Set(expected.flatMap((t) => t.images.filter((i) => i.id === id).flatMap((i) => i.tags)))];
    expect(byId(records, HELLO.id).repoTags.length).toBe(allTags(HELLO.id).length);
    expect(byId(records, TOOLS.id).repoTags).toContain("localhost/tools-bare:2.0");
    expect(byId(records, TOOLS.id).repoDigests).toContain(`docker.io/library/edge-tools@${tarball("ctr-export.tar").images[1]!.repoDigest}`);
  });

  test("a configured repository takes bare-tag ref.names", async () => {
    const records = await open(storeDir("tools-bare.tar.gz"), "registry.local/edge/tools").store.list();
    expect(records[0]!.repoTags).toEqual(["registry.local/edge/tools:2.0"]);
  });

  test("options: path is required, repository must be a repository name", () => {
    expect(archives.options.path.required).toBe(true);
    const ctx: BackendContext = { name: "t", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice() {} };
    expect(() => archives.create({ path: "/x", repository: "Bad Repo" }, ctx)).toThrow(/repository/);
  });
});

describe("tar details, from GNU tar", () => {
  /** hello-docker.tar with its layer named through the v1 directory's symlink, as Docker 20.10 names it. */
  function viaSymlink(): string {
    const dir = unpack("hello-docker.tar");
    const manifest = manifestOf(dir);
    const link = readdirSync(dir).find((n) => /^[0-9a-f]{64}$/.test(n))!;
    manifest[0].Layers = [`${link}/layer.tar`];
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
    return dir;
  }

  for (const [format, flags] of [["gnu", ["--format=gnu"]], ["pax", ["--format=pax"]], ["ustar", ["--format=ustar"]], ["gzip", ["-z"]]] as const) {
    test(`${format}: long member names, ./ prefixes and a layer reached through a symlink`, async () => {
      const dir = viaSymlink();
      // A config path past ustar's 100-byte name field: GNU 'L', PAX path, or the ustar prefix.
      const deep = `${"d".repeat(60)}/${"e".repeat(60)}`;
      mkdirSync(join(dir, deep), { recursive: true });
      const manifest = manifestOf(dir);
      renameSync(join(dir, manifest[0].Config), join(dir, deep, "config.json"));
      manifest[0].Config = `./${deep}/config.json`;
      writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
      const store = join(tempDir(), "s");
      mkdirSync(store);
      execFileSync("tar", [...flags, "-cf", join(store, `hello.${format === "gzip" ? "tar.gz" : "tar"}`), "-C", dir, "."]);
      const { store: s, log } = open(store);
      const records = await s.list();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ id: HELLO.id, size: HELLO.size });
      expect(records[0]!.repoDigests).toEqual(await writtenRepoDigestsOf((id, d) => s.content(id, d), HELLO.id, records[0]!.repoTags));
      expect(log.lines.filter((l) => l.level === "warn")).toEqual([]);
    });
  }

  test("a layer reached through a hardlink member", async () => {
    const dir = unpack("hello-docker.tar");
    const layer = manifestOf(dir)[0].Layers[0];
    const v1 = readdirSync(dir).find((n) => /^[0-9a-f]{64}$/.test(n))!;
    unlinkSync(join(dir, v1, "layer.tar"));
    linkSync(join(dir, layer), join(dir, v1, "layer.tar"));
    const store = join(tempDir(), "s");
    mkdirSync(store);
    // GNU tar stores <v1>/layer.tar (sorted first) as the file and the manifest's layer as a hardlink to it.
    pack(dir, join(store, "hello.tgz"), "-z");
    expect(execFileSync("tar", ["-tvzf", join(store, "hello.tgz")]).toString()).toContain(`${layer} link to ${v1}/layer.tar`);
    const records = await open(store).store.list();
    expect(records).toMatchObject([{ id: HELLO.id, size: HELLO.size }]);
  });

  test("a 4 GiB layer is skipped over, never read: the listing takes headers only", async () => {
    const store = join(tempDir(), "s");
    mkdirSync(store);
    const config = readFileSync(join(unpack("hello-docker.tar"), `${HELLO.id.slice(7)}.json`));
    const path = join(store, "big.tar");
    const layer = 4 * 1024 ** 3;
    const fd = openSync(path, "w");
    let pos = 0;
    const put = (name: string, size: number, data?: Buffer) => {
      writeSync(fd, tarHeader(name, size), 0, 512, pos);
      pos += 512;
      if (data) writeSync(fd, data, 0, data.length, pos);
      pos += Math.ceil(size / 512) * 512;
    };
    put("layer.tar", layer); // sparse: the file has a hole where the layer would be
    put("config.json", config.length, config);
    const manifest = Buffer.from(JSON.stringify([{ Config: "config.json", RepoTags: ["big:1"], Layers: ["layer.tar"] }]));
    put("manifest.json", manifest.length, manifest);
    writeSync(fd, Buffer.alloc(1024), 0, 1024, pos);
    closeSync(fd);
    const started = performance.now();
    const records = await open(store).store.list();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(records).toMatchObject([{ id: HELLO.id, repoTags: ["docker.io/library/big:1"], size: config.length + layer }]);
  });
});

/** A ustar header block with a valid checksum. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write("00000000000\0", 136);
  h.write("0", 156);
  h.write("ustar\0" + "00", 257);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

describe("changes", () => {
  test("an added, removed or replaced tarball is reflected; unchanged tarballs are not re-read", async () => {
    const dir = storeDir("hello-docker.tar");
    const { store: s } = open(dir);
    const first = await s.list();
    expect(ids(first)).toEqual([HELLO.id]);
    expect(s.tarballsRead).toBe(1);
    // Unchanged: the same array, and nothing opened.
    expect(await s.list()).toBe(first);
    expect(s.tarballsRead).toBe(1);

    copyFileSync(join(STORE, "tools-bare.tar.gz"), join(dir, "tools-bare.tar.gz"));
    const added = await s.list();
    expect(ids(added)).toEqual([HELLO.id, TOOLS.id].sort());
    expect(s.tarballsRead).toBe(2); // only the new one

    // Replaced by rename, as a careful copy does: new inode, new content.
    copyFileSync(join(STORE, "tools-docker.tar.gz"), join(dir, "next.tmp"));
    renameSync(join(dir, "next.tmp"), join(dir, "hello-docker.tar"));
    const replaced = await s.list();
    expect(ids(replaced)).toEqual([TOOLS.id]);
    expect(byId(replaced, TOOLS.id).repoTags.sort()).toEqual(["docker.io/library/edge-tools:2.0", "localhost/tools-bare:2.0"]);
    expect(s.tarballsRead).toBe(3);

    unlinkSync(join(dir, "tools-bare.tar.gz"));
    expect((await s.list())[0]!.repoTags).toEqual(["docker.io/library/edge-tools:2.0"]);
    expect(s.tarballsRead).toBe(3);
    expect(s.status(TOOLS.id)?.user).toBe(TOOLS.user);
  });

  test("files that are not tarballs by name are ignored", async () => {
    const dir = storeDir("hello-oci.tar");
    writeFileSync(join(dir, "README"), "not an image");
    mkdirSync(join(dir, "sub"));
    copyFileSync(join(STORE, "tools-bare.tar.gz"), join(dir, "sub", "tools-bare.tar.gz"));
    const { store: s, log } = open(dir);
    expect(ids(await s.list())).toEqual([HELLO.id]);
    expect(log.lines).toEqual([]);
  });

  test("a call that times out keeps what it read, and asks for the rest to be listed again", async () => {
    const dir = storeDir("hello-docker.tar", "tools-docker.tar.gz");
    const { store: s } = open(dir);
    let notified = 0;
    const stop = s.watch(() => notified++);
    // Times out once the first tarball is read.
    let checks = 0;
    const signal = { get aborted() { return checks++ > 0; } } as AbortSignal;
    await expect(s.list({ signal })).rejects.toThrow(/interrupted .* after 1 of 2 tarballs/);
    expect(notified).toBeGreaterThan(0);
    expect(s.tarballsRead).toBe(1);
    expect(ids(await s.list())).toEqual([HELLO.id, TOOLS.id].sort());
    expect(s.tarballsRead).toBe(2);
    stop();
  });
});

describe("bad input: skipped, logged once with the path, everything else served", () => {
  /** A store with a good tarball next to the bad one; asserts the good one is served and the bad one logged. */
  async function expectSkipped(dir: string, bad: string, text: string): Promise<void> {
    copyFileSync(join(STORE, "tools-bare.tar.gz"), join(dir, "good.tar.gz"));
    const { store: s, log } = open(dir);
    const records = await s.list();
    expect(ids(records)).toEqual([TOOLS.id]);
    expect(warned(log, join(dir, bad), text)).toBe(true);
    const warnings = log.lines.length;
    await s.list();
    expect(log.lines.length).toBe(warnings); // once, not on every scan
  }

  test("a truncated tar", async () => {
    const dir = storeDir("hello-docker.tar");
    truncateSync(join(dir, "hello-docker.tar"), 3000);
    await expectSkipped(dir, "hello-docker.tar", "truncated");
  });

  test("a tar cut at a header boundary, without its end blocks", async () => {
    const dir = storeDir("hello-oci.tar");
    truncateSync(join(dir, "hello-oci.tar"), 512);
    await expectSkipped(dir, "hello-oci.tar", "truncated");
  });

  test("a truncated .tar.gz", async () => {
    const dir = storeDir("tools-docker.tar.gz");
    const path = join(dir, "tools-docker.tar.gz");
    truncateSync(path, readFileSync(path).length - 40);
    await expectSkipped(dir, "tools-docker.tar.gz", "");
  });

  test("a file that is not a tar", async () => {
    const dir = storeDir();
    writeFileSync(join(dir, "junk.tar"), "this is not a tarball\n".repeat(100));
    await expectSkipped(dir, "junk.tar", "not a tar archive");
  });

  test("a gzip file that is not a tar inside", async () => {
    const dir = storeDir();
    writeFileSync(join(dir, "junk.tar.gz"), Bun.gzipSync(Buffer.from("hello\n".repeat(200))));
    await expectSkipped(dir, "junk.tar.gz", "not a tar archive");
  });

  test("a corrupt manifest.json", async () => {
    const dir = storeDir();
    const src = unpack("hello-docker.tar");
    writeFileSync(join(src, "manifest.json"), '[{"Config": "');
    pack(src, join(dir, "bad.tar"));
    await expectSkipped(dir, "bad.tar", "not valid JSON");
  });

  test("a corrupt index.json in an oci-archive", async () => {
    const dir = storeDir();
    const src = unpack("hello-oci.tar");
    writeFileSync(join(src, "index.json"), "{");
    pack(src, join(dir, "bad.tar"));
    await expectSkipped(dir, "bad.tar", "not valid JSON");
  });

  test("a missing config member", async () => {
    const dir = storeDir();
    const src = unpack("hello-docker.tar");
    unlinkSync(join(src, manifestOf(src)[0].Config));
    pack(src, join(dir, "bad.tar"));
    await expectSkipped(dir, "bad.tar", "no such member");
  });

  test("a missing layer member", async () => {
    const dir = storeDir();
    const src = unpack("hello-docker.tar");
    const layer = manifestOf(src)[0].Layers[0];
    unlinkSync(join(src, layer));
    // The v1 directory's symlink to it would dangle; GNU tar keeps it.
    pack(src, join(dir, "bad.tar"));
    await expectSkipped(dir, "bad.tar", "no such member");
  });

  test("an oci-archive blob whose content does not match its digest", async () => {
    const dir = storeDir();
    const src = unpack("hello-oci.tar");
    writeFileSync(join(src, "blobs/sha256", tarball("hello-oci.tar").images[0]!.repoDigest!.slice(7)), '{"schemaVersion":2}');
    pack(src, join(dir, "bad.tar"));
    await expectSkipped(dir, "bad.tar", "does not match its digest");
  });

  for (const [what, target, text] of [
    ["leaves the archive", "../../../../etc/passwd", "outside the archive"],
    ["is absolute", "/etc/passwd", "leaves the archive"],
    ["loops", "layer.tar", "symlinks loop"],
  ] as const) {
    test(`a member symlink that ${what}`, async () => {
      const dir = storeDir();
      const src = unpack("hello-docker.tar");
      const manifest = manifestOf(src);
      const v1 = readdirSync(src).find((n) => /^[0-9a-f]{64}$/.test(n))!;
      manifest[0].Layers = [`${v1}/layer.tar`];
      writeFileSync(join(src, "manifest.json"), JSON.stringify(manifest));
      unlinkSync(join(src, v1, "layer.tar"));
      symlinkSync(target, join(src, v1, "layer.tar"));
      pack(src, join(dir, "bad.tar"));
      await expectSkipped(dir, "bad.tar", text);
    });
  }

  test("a tarball symlink that leaves the store, and one that loops", async () => {
    const dir = storeDir();
    const outside = join(tempDir(), "outside.tar");
    copyFileSync(join(STORE, "hello-oci.tar"), outside);
    symlinkSync(outside, join(dir, "outside.tar"));
    symlinkSync("loop-b.tar", join(dir, "loop-a.tar"));
    symlinkSync("loop-a.tar", join(dir, "loop-b.tar"));
    copyFileSync(join(STORE, "tools-bare.tar.gz"), join(dir, "good.tar.gz"));
    const { store: s, log } = open(dir);
    expect(ids(await s.list())).toEqual([TOOLS.id]);
    expect(warned(log, join(dir, "outside.tar"), "resolves outside the store")).toBe(true);
    expect(warned(log, join(dir, "loop-a.tar"), "ELOOP")).toBe(true);
  });

  test("a tarball symlink inside the store is followed", async () => {
    const dir = storeDir("hello-oci.tar");
    mkdirSync(join(dir, "pool"));
    renameSync(join(dir, "hello-oci.tar"), join(dir, "pool", "hello-oci.tar"));
    symlinkSync("pool/hello-oci.tar", join(dir, "hello.tar"));
    expect(ids(await open(dir).store.list())).toEqual([HELLO.id]);
  });

  test("a FIFO named like a tarball is refused instead of blocking", async () => {
    const dir = storeDir();
    execFileSync("mkfifo", [join(dir, "fifo.tar")]);
    await expectSkipped(dir, "fifo.tar", "not a regular file");
  });

  // Root reads anything: scripts/test runs the "(unprivileged)" tests again as nobody.
  test.skipIf(process.getuid?.() === 0)("a tarball the service may not read (unprivileged)", async () => {
    const dir = storeDir("hello-oci.tar");
    execFileSync("chmod", ["000", join(dir, "hello-oci.tar")]);
    await expectSkipped(dir, "hello-oci.tar", "EACCES");
  });

  test.skipIf(process.getuid?.() === 0)("a tarball made readable again is read, without a content change (unprivileged)", async () => {
    const dir = storeDir("hello-oci.tar");
    execFileSync("chmod", ["000", join(dir, "hello-oci.tar")]);
    const { store: s } = open(dir);
    expect(await s.list()).toEqual([]);
    execFileSync("chmod", ["644", join(dir, "hello-oci.tar")]);
    expect(ids(await s.list())).toEqual([HELLO.id]);
  });

  test.skipIf(process.getuid?.() === 0)("an unchanged tarball made unreadable after the first scan is served from the cache (unprivileged)", async () => {
    const dir = storeDir("hello-oci.tar");
    const { store: s } = open(dir);
    const first = await s.list();
    execFileSync("chmod", ["000", join(dir, "hello-oci.tar")]);
    expect(await s.list()).toBe(first);
  });

  test("a RepoTags entry that is not a reference is dropped; the image stays", async () => {
    const dir = storeDir();
    const src = unpack("hello-docker.tar");
    const manifest = manifestOf(src);
    manifest[0].RepoTags = ["Not A Tag!", "edge/app:1"];
    writeFileSync(join(src, "manifest.json"), JSON.stringify(manifest));
    pack(src, join(dir, "tags.tar"));
    const { store: s, log } = open(dir);
    expect((await s.list())[0]!.repoTags).toEqual(["docker.io/edge/app:1"]);
    expect(warned(log, join(dir, "tags.tar"), "is not a reference")).toBe(true);
  });

  test("a store directory that disappears throws with the path; it is served again when it returns", async () => {
    const dir = storeDir("hello-oci.tar");
    const { store: s } = open(dir);
    expect(ids(await s.list())).toEqual([HELLO.id]);
    const aside = `${dir}.aside`;
    renameSync(dir, aside);
    await expect(s.list()).rejects.toThrow(/cannot list the archive directory: ENOENT/);
    renameSync(aside, dir);
    expect(ids(await s.list())).toEqual([HELLO.id]);
  });
});

describe("removal from a writable directory reads the directory as it is now", () => {
  function writable(path: string) {
    const ctx: BackendContext = { name: "test", log: memoryLogger(), baseDir: "/", platform: amd64, setNotice() {} };
    return new ArchiveDirStore(path, undefined, ctx, true);
  }

  test("a tarball replaced since the last list by one that also holds another image is refused, not deleted", async () => {
    const dir = storeDir("hello-docker.tar");
    const s = writable(dir);
    expect(ids(await s.list())).toEqual([HELLO.id]);
    // docker save hello tools > hello-docker.tar.new && mv ... (no list() since)
    copyFileSync(join(STORE, "multi-docker.tar"), join(dir, "new.part"));
    renameSync(join(dir, "new.part"), join(dir, "hello-docker.tar"));
    await expect(Promise.resolve().then(() => s.remove(HELLO.id))).rejects.toThrow(/hello-docker\.tar \(also holds/);
    expect(readdirSync(dir)).toEqual(["hello-docker.tar"]);
  });

  test("a tarball replaced by one of another image is not deleted; one added since is", async () => {
    const dir = storeDir("hello-docker.tar");
    const s = writable(dir);
    expect(ids(await s.list())).toEqual([HELLO.id]);
    copyFileSync(join(STORE, "tools-docker.tar.gz"), join(dir, "new.part"));
    renameSync(join(dir, "new.part"), join(dir, "hello-docker.tar"));
    copyFileSync(join(STORE, "hello-oci.tar"), join(dir, "hello-oci.tar"));
    await s.remove(HELLO.id);
    expect(readdirSync(dir)).toEqual(["hello-docker.tar"]);
    expect(ids(await s.list())).toEqual([TOOLS.id]);
  });
});
