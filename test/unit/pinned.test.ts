import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinBackends as builtinsFor } from "../../src/backends/index";
import { ConfigError, configFromSource, readConfigSource } from "../../src/config/config";
import { PinnedImages, PinnedPatternError } from "../../src/model/pinned";
import { DEFAULT_PLUGIN_DIR } from "../../src/plugins/load";
import { ImageView } from "../../src/registry/view";
import { id, valid } from "./helpers";

const D = `sha256:${"d".repeat(64)}`;
const names = (...n: string[]) => n;

describe("pinned_images patterns (CRI-O's syntax)", () => {
  test("exact: the normalized reference, whole, case-insensitive", () => {
    const p = new PinnedImages(["busybox", "registry.k8s.io/pause:3.10", `example.com/app@${D}`]);
    expect(p.matches(names("docker.io/library/busybox:latest"))).toBe(true);
    expect(p.matches(names("docker.io/library/busybox:1.36"))).toBe(false);
    expect(p.matches(names("registry.k8s.io/pause:3.10"))).toBe(true);
    expect(p.matches(names("registry.k8s.io/pause:3.10.1"))).toBe(false);
    expect(p.matches(names(`example.com/app@${D}`))).toBe(true);
    expect(new PinnedImages(["example.com/app:V1"]).matches(names("example.com/app:v1"))).toBe(true);
  });

  test("glob: the text before `*` (raw, as CRI-O's unanchored regexp, or normalized)", () => {
    const p = new PinnedImages(["registry.k8s.io/pause*", "busybox:1.*"]);
    expect(p.matches(names("registry.k8s.io/pause:3.9"))).toBe(true);
    expect(p.matches(names("docker.io/library/busybox:1.36"))).toBe(true);
    expect(p.matches(names("docker.io/library/busybox:2.0"))).toBe(false);
    expect(p.matches(names("registry.k8s.io/coredns:1.11"))).toBe(false);
    // docker.io/busybox normalizes to docker.io/library/busybox.
    expect(new PinnedImages(["docker.io/busybox*"]).matches(names("docker.io/library/busybox:1"))).toBe(true);
  });

  test("keyword: the word anywhere, in tags and digests", () => {
    const p = new PinnedImages(["*pause*"]);
    expect(p.matches(names("registry.k8s.io/pause:3.10"))).toBe(true);
    expect(p.matches(names("example.com/PAUSE-tools:1"))).toBe(true);
    expect(p.matches(names("example.com/tools:1"))).toBe(false);
    expect(new PinnedImages(["*dddd*"]).matches(names(`example.com/x@${D}`))).toBe(true);
  });

  test("malformed patterns are refused, naming the pattern", () => {
    for (const bad of ["", "a*b", "*", "**x*y**", "*abc", "Not A Ref"]) {
      expect(() => new PinnedImages([bad])).toThrow(PinnedPatternError);
    }
  });
});

describe("Image.pinned in the view", () => {
  const records = [valid({ id: id("1"), repoTags: ["app:1"] }), valid({ id: id("2"), repoTags: ["tool:1"] })];
  test("only images on writable backends can be unpinned; patterns pin the rest", () => {
    const view = ImageView.merge(
      [
        { backend: "rw", records },
        { backend: "ro", records: [valid({ id: id("3"), repoTags: ["other:1"] })] },
        { backend: "rw2", records: [valid({ id: id("4"), repoTags: ["x:1"], removable: false }), valid({ id: id("5"), kind: "embedded" })] },
        { backend: "rw3", records: [valid({ id: id("6"), repoTags: ["kept:1"], pinned: true }), valid({ id: id("7"), repoTags: ["free:1"], pinned: false })] },
      ],
      undefined,
      { patterns: new PinnedImages(["*tool*"]), removers: new Set(["rw", "rw2", "rw3"]) },
    );
    expect(view.getById(id("1"))!.pinned).toBe(false);
    expect(view.getById(id("2"))!.pinned).toBe(true); // pattern
    expect(view.getById(id("3"))!.pinned).toBe(true); // read-only backend
    expect(view.getById(id("4"))!.pinned).toBe(true); // the backend cannot remove it
    expect(view.getById(id("5"))!.pinned).toBe(true); // embedded
    expect(view.getById(id("6"))!.pinned).toBe(true); // the store pins it (containerd's label)
    expect(view.getById(id("7"))!.pinned).toBe(false);
  });

  test("an image also held by a read-only backend is pinned", () => {
    const view = ImageView.merge([{ backend: "rw", records }, { backend: "ro", records: [records[0]!] }], undefined, {
      patterns: PinnedImages.none,
      removers: new Set(["rw"]),
    });
    expect(view.getById(id("1"))!.pinned).toBe(true);
    expect(view.getById(id("2"))!.pinned).toBe(false);
  });
});

describe("config", () => {
  const dir = mkdtempSync(join(tmpdir(), "imagelet-pinned-"));
  const definitions = builtinsFor({ pluginDir: DEFAULT_PLUGIN_DIR, allowInsecure: false });
  const load = (text: string) => {
    const file = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
    writeFileSync(file, text);
    return configFromSource(readConfigSource(file), definitions);
  };
  test("pinned_images and writable are read; bad values are errors naming the key", () => {
    const c = load(`pinned_images = ["*pause*", "busybox"]\n[[backend]]\ntype = "oci-layout"\npath = "/x"\nwritable = true\n`);
    expect(c.pinnedImages).toEqual(["*pause*", "busybox"]);
    expect(c.backends[0]!.options).toEqual({ path: "/x", writable: true });
    expect(() => load(`pinned_images = "busybox"\n`)).toThrow(/pinned_images: expected an array of strings/);
    expect(() => load(`pinned_images = ["a*b"]\n`)).toThrow(ConfigError);
    expect(() => load(`[[backend]]\ntype = "oci-layout"\npath = "/x"\nwritable = "yes"\n`)).toThrow(/backend\[0\]\.writable: expected boolean/);
    // Only stores imagelet can remove from take the key.
    expect(() => load(`[[backend]]\ntype = "docker"\npath = "/x"\nwritable = true\n`)).toThrow(/backend\[0\]\.writable: unknown key/);
    rmSync(dir, { recursive: true, force: true });
  });
});
