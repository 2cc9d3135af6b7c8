// Layer re-creation from tar-split: the CRC, name rules, and above all that a
// re-created layer never carries bytes from outside the layer. Layers are
// made by GNU tar and disassembled by the real tar-split tool (Debian package
// tar-split), so the tar-split files are the ones Go's assembler reads.
import { afterEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, closeSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Crc64, crc64 } from "../../src/backends/common/crc64";
import { StoreProblem } from "../../src/backends/common/files";
import { assembleLayer, layerBody, memberPath, readTarSplit, summarizeTarSplit, TarSplitSizes, type LayerSource } from "../../src/backends/common/tar-split";
import type { ContentBody } from "../../src/backend/contract";

const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-tarsplit-"));
  temps.push(dir);
  return dir;
}

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");

/**
 * A store with one layer: `fill` writes the layer's files into <store>/diff,
 * GNU tar makes the layer tar, tar-split disassembles it. Also an `outside`
 * directory beside the store, for files the layer must never reach.
 */
function makeLayer(fill: (diff: string) => void, tarArgs: string[] = []): { layer: LayerSource; tar: Buffer; outside: string } {
  const dir = tempDir();
  const store = join(dir, "store");
  const diff = join(store, "diff");
  const outside = join(dir, "outside");
  mkdirSync(diff, { recursive: true });
  mkdirSync(outside);
  fill(diff);
  const tarPath = join(dir, "layer.tar");
  execFileSync("tar", ["-C", diff, ...tarArgs, "-cf", tarPath, "."]);
  const tarSplit = join(store, "layer.tar-split.gz");
  execFileSync("tar-split", ["disasm", "--no-stdout", "--output", tarSplit, tarPath], { stdio: "pipe" });
  return { layer: { storeRoot: store, tarSplit, diffDir: diff }, tar: readFileSync(tarPath), outside };
}

async function collect(layer: LayerSource, start = 0): Promise<{ bytes: Buffer; error?: unknown }> {
  const { size } = await summarizeTarSplit(layer.storeRoot, layer.tarSplit);
  const chunks: Uint8Array[] = [];
  try {
    for await (const c of assembleLayer(layer, size, start, new AbortController().signal)) chunks.push(c);
    return { bytes: Buffer.concat(chunks) };
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error };
  }
}

/** The tar offset where a member's payload starts (from the tar-split). */
async function payloadOffset(layer: LayerSource, name: string): Promise<number> {
  let offset = 0;
  for await (const e of readTarSplit(layer.storeRoot, layer.tarSplit)) {
    if (e.type === "file" && e.name.toString() === name) return offset;
    offset += e.type === "segment" ? e.bytes.length : e.size;
  }
  throw new Error(`no member ${name}`);
}

describe("CRC-64/GO-ISO", () => {
  test("the catalogue check value and tar-split's payload for \"abc\\n\"", () => {
    expect(new Crc64().update(Buffer.from("123456789")).hex()).toBe("b90956c775a41001");
    expect(crc64(Buffer.from("abc\n")).toString("base64")).toBe("YUd2xCAAAAA=");
    expect(crc64(Buffer.alloc(0)).toString("hex")).toBe("0000000000000000");
  });

  test("incremental updates in any split equal one update (slicing-by-8 and the byte tail agree)", () => {
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 37 + 11) & 255));
    const whole = crc64(data).toString("hex");
    for (const cut of [1, 3, 7, 8, 9, 500, 999]) {
      expect(new Crc64().update(data.subarray(0, cut)).update(data.subarray(cut)).hex()).toBe(whole);
    }
  });
});

describe("member names are untrusted", () => {
  test("cleaned to relative paths", () => {
    expect(memberPath(Buffer.from("./etc//hosts")).toString()).toBe("etc/hosts");
    expect(memberPath(Buffer.from("etc/")).toString()).toBe("etc");
    expect(memberPath(Buffer.from("./")).toString()).toBe("");
    expect(memberPath(Buffer.from("a/..b/c..")).toString()).toBe("a/..b/c..");
  });

  test("absolute paths, .. components and NUL are refused", () => {
    expect(() => memberPath(Buffer.from("/etc/shadow"))).toThrow("absolute");
    expect(() => memberPath(Buffer.from("a/../../etc/shadow"))).toThrow("..");
    expect(() => memberPath(Buffer.from(".."))).toThrow("..");
    expect(() => memberPath(Buffer.from("a\0b"))).toThrow("NUL");
  });
});

/** Writes a tar-split file by hand (for what no tar writer produces). */
function handTarSplit(dir: string, lines: object[]): LayerSource {
  const store = join(dir, "store");
  mkdirSync(join(store, "diff"), { recursive: true });
  const tarSplit = join(store, "hand.tar-split.gz");
  writeFileSync(tarSplit, gzipSync(lines.map((l) => JSON.stringify(l)).join("\n") + "\n"));
  return { storeRoot: store, tarSplit, diffDir: join(store, "diff") };
}

const header = (typeflag = "0") => {
  const b = Buffer.alloc(512);
  b[156] = typeflag.charCodeAt(0);
  return b.toString("base64");
};

describe("tar-split parsing", () => {
  test("name_raw (non-UTF-8 names) is read as bytes", async () => {
    const { layer, tar } = makeLayer((d) => writeFileSync(Buffer.concat([Buffer.from(`${d}/`), Buffer.from([0x66, 0xff, 0x6f])]), "raw name\n"));
    const names: Buffer[] = [];
    for await (const e of readTarSplit(layer.storeRoot, layer.tarSplit)) if (e.type === "file") names.push(e.name);
    expect(names.some((n) => n.equals(Buffer.from([0x66, 0xff, 0x6f])))).toBe(true);
    const { bytes, error } = await collect(layer);
    expect(error).toBeUndefined();
    expect(sha256(bytes)).toBe(sha256(tar));
  });

  test("a hostile name, a duplicate path, a missing CRC, a sparse member: corrupt, naming the file and line", async () => {
    const dir = tempDir();
    const cases: [object[], string][] = [
      [[{ type: 2, payload: header() }, { type: 1, name: "../../etc/shadow", size: 4, payload: "AAAAAAAAAAA=" }], ".. component"],
      [[{ type: 2, payload: header() }, { type: 1, name: "/etc/shadow", size: 4, payload: "AAAAAAAAAAA=" }], "absolute"],
      [[{ type: 1, name_raw: Buffer.from("a\0b").toString("base64") }], "NUL"],
      [[{ type: 1, name: "a/" }, { type: 1, name: "./a" }], "appears twice"],
      [[{ type: 2, payload: header() }, { type: 1, name: "a", size: 4 }], "no CRC-64"],
      [[{ type: 2, payload: header("S") }, { type: 1, name: "a", size: 4, payload: "AAAAAAAAAAA=" }], "sparse"],
      [[{ type: 2, payload: header("1") }, { type: 1, name: "a", size: 4, payload: "AAAAAAAAAAA=" }], "a payload of 4 bytes"],
      [[{ type: 1, name: "a", size: 4, payload: "AAAAAAAAAAA=" }], "no header"],
      [[{ type: 3 }], "unknown type"],
    ];
    for (const [i, [lines, why]] of cases.entries()) {
      const layer = handTarSplit(join(dir, String(i)), lines);
      const error = await summarizeTarSplit(layer.storeRoot, layer.tarSplit).catch((e) => e);
      expect(error).toBeInstanceOf(StoreProblem);
      expect((error as StoreProblem).message).toContain(why);
      expect((error as StoreProblem).message).toContain("line");
      expect((error as StoreProblem).path).toBe(layer.tarSplit);
    }
  });

  test("a tar-split that is not gzip, or not JSON lines, is corrupt", async () => {
    const dir = tempDir();
    const layer = handTarSplit(dir, []);
    writeFileSync(layer.tarSplit, "not gzip at all");
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("corrupt tar-split");
    writeFileSync(layer.tarSplit, gzipSync("{\"type\":2,\"payload\":\"AAAA\"}\nnot json\n"));
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("line 2");
  });

  test("a PAX sparse tar (GNU tar --format=posix -S) is refused too; a file merely named GNU.sparse.* is not", async () => {
    const { layer } = makeLayer((d) => {
      writeFileSync(join(d, "holes"), "");
      execFileSync("truncate", ["-s", "1M", join(d, "holes")]);
      writeFileSync(join(d, "holes"), "end\n", { flag: "a" });
    }, ["--format=posix", "-S"]);
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("sparse");
    const plain = makeLayer((d) => writeFileSync(join(d, "GNU.sparse.name"), "not sparse\n"), ["--format=posix"]);
    const { bytes, error } = await collect(plain.layer);
    expect(error).toBeUndefined();
    expect(sha256(bytes)).toBe(sha256(plain.tar));
  });

  test("a tar-split that is a symlink out of the store, or a FIFO, is refused without reading it", async () => {
    const { layer, outside } = makeLayer((d) => writeFileSync(join(d, "f"), "x\n"));
    renameSync(layer.tarSplit, join(outside, "moved.gz"));
    symlinkSync(join(outside, "moved.gz"), layer.tarSplit);
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("outside the store");
    unlinkSync(layer.tarSplit);
    execFileSync("mkfifo", [layer.tarSplit]);
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("not a regular file");
  }, 5000);

  test("a GNU sparse tar made by GNU tar is refused, not expanded", async () => {
    const { layer } = makeLayer((d) => {
      writeFileSync(join(d, "holes"), "");
      execFileSync("truncate", ["-s", "1M", join(d, "holes")]);
      writeFileSync(join(d, "holes"), "end\n", { flag: "a" });
    }, ["--format=gnu", "-S"]);
    expect(summarizeTarSplit(layer.storeRoot, layer.tarSplit)).rejects.toThrow("sparse");
  });
});

describe("re-creation", () => {
  const tree = (d: string) => {
    mkdirSync(join(d, "etc/sub"), { recursive: true });
    writeFileSync(join(d, "etc/hosts"), "127.0.0.1 localhost\n");
    writeFileSync(join(d, "etc/sub/empty"), "");
    writeFileSync(join(d, "a".repeat(150)), "long name, GNU L record\n");
    writeFileSync(join(d, "big.bin"), Buffer.from(Array.from({ length: 3 * 1024 * 1024 + 17 }, (_, i) => (i * 7) & 255)));
    linkSync(join(d, "etc/hosts"), join(d, "hosts-link"));
    symlinkSync("etc/hosts", join(d, "hosts-symlink"));
  };

  test("GNU and PAX tars come back byte for byte, with the tar-split's length", async () => {
    for (const format of ["--format=gnu", "--format=posix"]) {
      const { layer, tar } = makeLayer(tree, [format]);
      expect((await summarizeTarSplit(layer.storeRoot, layer.tarSplit)).size).toBe(tar.length);
      const { bytes, error } = await collect(layer);
      expect(error).toBeUndefined();
      expect(bytes.length).toBe(tar.length);
      expect(sha256(bytes)).toBe(sha256(tar));
    }
  });

  test("open(start) yields exactly the suffix, from inside a header, a small file and a big file", async () => {
    const { layer, tar } = makeLayer(tree);
    const big = await payloadOffset(layer, "big.bin");
    const hosts = await payloadOffset(layer, "etc/hosts");
    for (const start of [1, 100, hosts + 3, big - 1, big + 1, big + 1024 * 1024 + 5, tar.length - 1]) {
      const { bytes, error } = await collect(layer, start);
      expect(error).toBeUndefined();
      expect(bytes.equals(tar.subarray(start))).toBe(true);
    }
  });
});

describe("a re-created layer never carries bytes from outside the layer", () => {
  const secret = "root's secret!!\n"; // 16 bytes, the same length as the layer's file
  const layerFile = "layer's file...\n";
  const fill = (d: string) => {
    mkdirSync(join(d, "dir"));
    writeFileSync(join(d, "dir/file"), layerFile);
    writeFileSync(join(d, "top"), layerFile);
    writeFileSync(join(d, "big"), Buffer.alloc(2 * 1024 * 1024, 7));
  };

  /** The stream throws a StoreProblem naming the member, having yielded nothing of it or after it. */
  async function expectRefused(layer: LayerSource, member: string, why: string) {
    const offset = await payloadOffset(layer, member);
    const { bytes, error } = await collect(layer);
    expect(error).toBeInstanceOf(StoreProblem);
    expect((error as StoreProblem).message).toContain(why);
    expect((error as StoreProblem).path).toEndWith(member);
    expect(bytes.length).toBeLessThanOrEqual(offset);
    expect(bytes.includes(secret)).toBe(false);
  }

  test("the unchanged layer re-creates (the cases below differ only by the change)", async () => {
    const { layer, tar } = makeLayer(fill);
    expect(sha256((await collect(layer)).bytes)).toBe(sha256(tar));
  });

  test("a file swapped for a symlink to a file outside the store", async () => {
    const { layer, outside } = makeLayer(fill);
    writeFileSync(join(outside, "secret"), secret);
    unlinkSync(join(layer.diffDir, "top"));
    symlinkSync(join(outside, "secret"), join(layer.diffDir, "top"));
    await expectRefused(layer, "top", "symlink");
  });

  test("a file swapped for a relative symlink that stays inside the layer is refused too", async () => {
    const { layer } = makeLayer(fill);
    unlinkSync(join(layer.diffDir, "top"));
    symlinkSync("dir/file", join(layer.diffDir, "top"));
    await expectRefused(layer, "top", "symlink");
  });

  test("a directory swapped for a symlink in an intermediate component, even to identical content", async () => {
    const { layer, outside } = makeLayer(fill);
    mkdirSync(join(outside, "dir"));
    writeFileSync(join(outside, "dir/file"), layerFile);
    rmSync(join(layer.diffDir, "dir"), { recursive: true });
    symlinkSync(join(outside, "dir"), join(layer.diffDir, "dir"));
    await expectRefused(layer, "dir/file", "resolves outside");
  });

  test("the same size with different content (CRC-64), small and big files", async () => {
    const { layer } = makeLayer(fill);
    writeFileSync(join(layer.diffDir, "top"), secret);
    await expectRefused(layer, "top", "CRC-64");
    const again = makeLayer(fill).layer;
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    big.write(secret, 1024 * 1024 + 3);
    writeFileSync(join(again.diffDir, "big"), big);
    await expectRefused(again, "big", "CRC-64");
  });

  test("a big file checked once is read once next time; changed after that (same size), it is checked again before it leaves", async () => {
    const { layer, tar } = makeLayer(fill);
    // Only files whose ctime was 2 s old when checked are remembered.
    await Bun.sleep(2100);
    expect(sha256((await collect(layer)).bytes)).toBe(sha256(tar));
    expect(sha256((await collect(layer)).bytes)).toBe(sha256(tar));
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    big.write(secret, 5);
    writeFileSync(join(layer.diffDir, "big"), big);
    await expectRefused(layer, "big", "CRC-64");
  }, 10000);

  test("a different size", async () => {
    const { layer } = makeLayer(fill);
    writeFileSync(join(layer.diffDir, "top"), "short\n");
    await expectRefused(layer, "top", "bytes; the tar's is 16");
  });

  test("a FIFO does not hang the stream", async () => {
    const { layer } = makeLayer(fill);
    unlinkSync(join(layer.diffDir, "top"));
    execFileSync("mkfifo", [join(layer.diffDir, "top")]);
    await expectRefused(layer, "top", "not a regular file");
  }, 5000);

  test("a missing file", async () => {
    const { layer } = makeLayer(fill);
    unlinkSync(join(layer.diffDir, "top"));
    await expectRefused(layer, "top", "ENOENT");
  });

  test("a hard link to a root-only file outside the layer (as root, which protected_hardlinks would stop for a user)", async () => {
    const { layer, outside } = makeLayer(fill);
    writeFileSync(join(outside, "secret"), secret);
    chmodSync(join(outside, "secret"), 0o600);
    unlinkSync(join(layer.diffDir, "top"));
    linkSync(join(outside, "secret"), join(layer.diffDir, "top"));
    await expectRefused(layer, "top", "CRC-64");
  });

  test("rootless-style files (another uid, mode 000) are layer content: served as the tar has them", async () => {
    const { layer, tar } = makeLayer((d) => {
      fill(d);
      chownSync(join(d, "top"), 100999, 100999);
      chmodSync(join(d, "top"), 0o000);
      chownSync(join(d, "dir"), 100999, 100999);
    });
    const { bytes, error } = await collect(layer);
    expect(error).toBeUndefined();
    expect(sha256(bytes)).toBe(sha256(tar));
  });

  test("a layer directory swapped for a symlink out of the store", async () => {
    const { layer, outside } = makeLayer(fill);
    const copy = join(outside, "diff");
    renameSync(layer.diffDir, copy);
    symlinkSync(copy, layer.diffDir);
    const { bytes, error } = await collect(layer);
    expect((error as StoreProblem).message).toContain("outside the store");
    expect(bytes.length).toBeLessThanOrEqual(await payloadOffset(layer, "big"));
  });

  test("a tar-split that grew after its length was announced throws rather than send more", async () => {
    const { layer } = makeLayer(fill);
    const { size } = await summarizeTarSplit(layer.storeRoot, layer.tarSplit);
    const chunks: Uint8Array[] = [];
    const error = await (async () => {
      for await (const c of assembleLayer(layer, size - 512, 0, new AbortController().signal)) chunks.push(c);
    })().catch((e) => e);
    expect((error as StoreProblem).message).toContain("announced");
    expect(Buffer.concat(chunks).length).toBeLessThanOrEqual(size - 512);
  });
});

describe("a layer verified before is streamed trusted: each input checked against the last whole stream's", () => {
  const fill = (d: string) => {
    mkdirSync(join(d, "dir"));
    writeFileSync(join(d, "dir/file"), "layer's file...\n");
    writeFileSync(join(d, "top"), "layer's file...\n");
    writeFileSync(join(d, "big"), Buffer.alloc(2 * 1024 * 1024, 7));
  };
  const sizes = new TarSplitSizes();

  async function body(layer: LayerSource, failures: unknown[] = []): Promise<ContentBody> {
    return layerBody(layer, sizes, new AbortController().signal, (e) => failures.push(e));
  }

  async function read(b: ContentBody, trusted?: boolean, between?: () => void): Promise<{ bytes: Buffer; error?: unknown }> {
    const chunks: Uint8Array[] = [];
    try {
      for await (const c of b.open!(0, new AbortController().signal, trusted)) {
        chunks.push(c);
        between?.();
      }
      return { bytes: Buffer.concat(chunks) };
    } catch (error) {
      return { bytes: Buffer.concat(chunks), error };
    }
  }

  /** A layer whose files are old enough to be recorded, and one whole stream of it read (what the mirror hashes). */
  async function verifiedLayer() {
    const made = makeLayer(fill);
    await Bun.sleep(2100);
    const first = await body(made.layer);
    expect(first.verifiedAs!()).toBeUndefined();
    expect(sha256((await read(first)).bytes)).toBe(sha256(made.tar));
    const key = first.verifiedAs!();
    expect(key).toStartWith("layer:");
    return { ...made, key: key! };
  }

  /** Rewrites a file with the bytes it has: a new ctime (identity), the same content. */
  function touch(path: string) {
    writeFileSync(path, readFileSync(path));
  }

  test("an unchanged layer: the next body names the same key and, trusted, streams the same tar", async () => {
    const { layer, tar, key } = await verifiedLayer();
    const next = await body(layer);
    expect(next.verifiedAs!()).toBe(key);
    expect(sha256((await read(next, true)).bytes)).toBe(sha256(tar));
    expect(next.verifiedAs!()).toBe(key);
  }, 10000);

  for (const member of ["top", "big"]) {
    test(`${member} changed between two downloads: the trusted stream throws before its bytes, and the next one is hashed`, async () => {
      const { layer, tar, key } = await verifiedLayer();
      touch(join(layer.diffDir, member));
      const failures: unknown[] = [];
      const trusted = await body(layer, failures);
      expect(trusted.verifiedAs!()).toBe(key); // named from the record: the change is only seen when opened
      const { bytes, error } = await read(trusted, true);
      expect(error).toBeInstanceOf(StoreProblem);
      expect((error as StoreProblem).message).toContain("not the file the layer was verified with");
      expect((error as StoreProblem).path).toEndWith(member);
      expect(bytes.length).toBeLessThanOrEqual(await payloadOffset(layer, member));
      expect(failures).toEqual([error]);
      // The record is gone: the next body names no key, so the mirror hashes it; it streams the tar.
      const next = await body(layer);
      expect(next.verifiedAs!()).toBeUndefined();
      expect(sha256((await read(next)).bytes)).toBe(sha256(tar));
      // The changed file is too young for its identity to be recorded yet.
      expect(next.verifiedAs!()).toBeUndefined();
    }, 10000);
  }

  test("a member changed while the trusted stream reads: it throws before its end", async () => {
    const { layer } = await verifiedLayer();
    let done = false;
    const { bytes, error } = await read(await body(layer), true, () => {
      if (done) return;
      done = true;
      const fd = openSync(join(layer.diffDir, "big"), "r+");
      writeSync(fd, Buffer.from([7]), 0, 1, 0); // the same byte: only the identity changes
      closeSync(fd);
    });
    expect(error).toBeInstanceOf(StoreProblem);
    expect((error as StoreProblem).path).toEndWith("big");
    expect(bytes.length).toBeLessThan((await summarizeTarSplit(layer.storeRoot, layer.tarSplit)).size);
  }, 10000);

  test("the tar-split rewritten (same bytes): the trusted stream throws before any byte", async () => {
    const { layer, key } = await verifiedLayer();
    touch(layer.tarSplit);
    const trusted = await body(layer);
    expect(trusted.verifiedAs!()).toBe(key);
    const { bytes, error } = await read(trusted, true);
    expect((error as StoreProblem).path).toBe(layer.tarSplit);
    expect(bytes.length).toBe(0);
  }, 10000);

  test("a body opened trusted with nothing recorded refuses", async () => {
    const { layer } = makeLayer(fill);
    const { error } = await read(await body(layer), true);
    expect(error).toBeInstanceOf(StoreProblem);
  });
});
