import { afterAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StoreProblem, bigDataFileName, isInside, readStoreFile, readStoreJson } from "../../src/backends/common/files";

const root = mkdtempSync(join(tmpdir(), "imagelet-store-"));
const outside = mkdtempSync(join(tmpdir(), "imagelet-outside-"));
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});
writeFileSync(join(root, "ok.json"), '{"a":1}');
writeFileSync(join(outside, "secret"), "secret");
mkdirSync(join(root, "sub"));
symlinkSync("../ok.json", join(root, "sub", "inside-link"));
symlinkSync(join(outside, "secret"), join(root, "escape"));
symlinkSync("loop-b", join(root, "loop-a"));
symlinkSync("loop-a", join(root, "loop-b"));
execFileSync("mkfifo", [join(root, "fifo")]);

describe("readStoreFile", () => {
  test("reads regular files and symlinks that stay inside", () => {
    expect(readStoreJson(root, "ok.json").value).toEqual({ a: 1 });
    expect(readStoreFile(root, "sub/inside-link").toString()).toBe('{"a":1}');
  });
  test("refuses a symlink that leaves the store, naming the path", () => {
    expect(() => readStoreFile(root, "escape")).toThrow(StoreProblem);
    expect(() => readStoreFile(root, "escape")).toThrow(/resolves outside the store/);
    expect(() => readStoreFile(root, "../" + outside.split("/").pop() + "/secret")).toThrow(/outside the store/);
  });
  test("refuses a symlink loop, a FIFO, a directory, a missing file, an oversize file", () => {
    expect(() => readStoreFile(root, "loop-a")).toThrow(/ELOOP/);
    expect(() => readStoreFile(root, "fifo")).toThrow(/not a regular file/);
    expect(() => readStoreFile(root, "sub")).toThrow(/not a regular file/);
    expect(() => readStoreFile(root, "absent")).toThrow(/ENOENT/);
    expect(() => readStoreFile(root, "ok.json", 3)).toThrow(/larger than 3 bytes/);
  });
  test("names the file when its content is not JSON", () => {
    writeFileSync(join(root, "bad.json"), "{nope");
    expect(() => readStoreJson(root, "bad.json")).toThrow(/bad.json|not valid JSON/);
    try {
      readStoreJson(root, "bad.json");
    } catch (e) {
      expect((e as StoreProblem).path).toBe("bad.json");
    }
  });
});

describe("isInside", () => {
  test("paths", () => {
    expect(isInside("/a/b", "/a/b")).toBe(true);
    expect(isInside("/a/b", "/a/b/c")).toBe(true);
    expect(isInside("/a/b", "/a/bc")).toBe(false);
    expect(isInside("/a/b", "/a")).toBe(false);
    expect(isInside("/a/b", "/a/b/..c")).toBe(true);
  });
});

describe("bigDataFileName (containers/storage makeBigDataBaseName)", () => {
  test("plain keys keep their name, others are =base64", () => {
    expect(bigDataFileName("manifest")).toBe("manifest");
    expect(bigDataFileName("instances.json")).toBe("instances.json");
    // The example from the reference notes: manifest-sha256:ba8a2… → =bWFuaWZlc3Qtc2hhMjU2OmJhOGEy…
    expect(bigDataFileName("manifest-sha256:ba8a2")).toBe("=bWFuaWZlc3Qtc2hhMjU2OmJhOGEy");
    expect(bigDataFileName("Manifest")).toBe(`=${btoa("Manifest")}`);
  });
});
