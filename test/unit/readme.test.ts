// What a newcomer follows cannot drift from what runs: README's apt-get line is
// the one .ci/run and scripts/test use (scripts/debian-packages), README's CLI
// list is the CLI's commands, and every doc the sources cite is in the repository.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { buildCli } from "../../src/cli/main";

const ROOT = join(import.meta.dir, "..", "..");
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const readme = read("README.md");

/** The package list's shell expansion, as README, .ci/run and scripts/test write it. */
const PACKAGES = "$(sed 's/#.*//' scripts/debian-packages)";

describe("the Debian packages", () => {
  const list = read("scripts/debian-packages")
    .split("\n")
    .map((l) => l.replace(/#.*/, "").trim())
    .filter((l) => l !== "");

  test("scripts/debian-packages: one Debian package name a line, none twice", () => {
    for (const name of list) expect(name).toMatch(/^[a-z0-9][a-z0-9+.-]+$/);
    expect(new Set(list).size).toBe(list.length);
    // The packages the tests are known to need (the containerd backend's compare with containerd's CRI answer).
    for (const needed of ["python3-grpcio", "python3-pytest", "systemd", "containerd"]) expect(list).toContain(needed);
  });

  test("README's apt-get line installs that list, as .ci/run does and as scripts/test tells", () => {
    const aptLines = readme.split("\n").filter((l) => l.includes("apt-get install -y"));
    expect(aptLines).toEqual([`sudo apt-get install -y ${PACKAGES}`]);
    const ci = read(".ci/run").split("\n").filter((l) => l.includes("apt-get install"));
    expect(ci).toEqual([`apt-get install -y -qq ${PACKAGES} >/dev/null`]);
    const check = read("scripts/test");
    expect(check).toContain(`sed 's/#.*//' scripts/debian-packages | xargs -r dpkg-query`);
    expect(check).toContain(`sudo apt-get install -y \\${PACKAGES}`);
  });
});

test("README's CLI list names each command the CLI has, and no other", () => {
  const block = /## CLI\n\n```\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const listed = [...block!.matchAll(/^imagelet (\S+)/gm)].map((m) => m[1]);
  const commands = buildCli()
    .commands.map((c) => c.name.split(" ")[0])
    .filter((name) => name !== "" && name !== "@@global@@");
  expect(listed.sort()).toEqual(commands.sort());
});

describe("documents the sources cite", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (entry === "node_modules" || entry === "gen" || entry === "fixtures") continue;
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.(ts|py|sh)$/.test(entry) || !entry.includes(".")) files.push(path);
    }
  };
  for (const dir of ["src", "sdk", "scripts", "test", "plugins", "packaging"]) walk(join(ROOT, dir));

  const headings = (page: string) =>
    new Set(
      read(page)
        .split("\n")
        .filter((l) => /^#+ /.test(l))
        // GitHub's anchors: lower case, punctuation but - and _ dropped, spaces as -.
        .map((l) => l.replace(/^#+ /, "").toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")),
    );

  test("are in the repository: no ../shared/ paths, each docs/*.md exists with the section named", () => {
    const bad: string[] = [];
    for (const file of files) {
      const where = relative(ROOT, file);
      if (where === "test/unit/readme.test.ts") continue;
      const text = readFileSync(file, "utf8");
      if (text.includes("shared/docs/") || text.includes("reference-image-stores")) bad.push(`${where}: cites a document outside the repository`);
      for (const [, page, anchor] of text.matchAll(/\bdocs\/([\w./-]+?\.md)(?:#([\w-]+))?/g)) {
        if (!existsSync(join(ROOT, "docs", page!))) bad.push(`${where}: docs/${page} does not exist`);
        else if (anchor !== undefined && !headings(join("docs", page!)).has(anchor)) bad.push(`${where}: docs/${page} has no section #${anchor}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
