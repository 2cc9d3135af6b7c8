// `imagelet config` prints TOML that reads back to the configuration it printed.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinBackends } from "../../src/backends/index";
import { MIRROR_SETTINGS, SETTINGS, configFromSource, defaultConfig, nothingToServe, readConfigSource, validateConfig, type ImageletConfig } from "../../src/config/config";
import { configToml } from "../../src/config/dump";
import { DEFAULT_PLUGIN_DIR } from "../../src/plugins/load";

const definitions = builtinBackends({ pluginDir: DEFAULT_PLUGIN_DIR, allowInsecure: false });
const dir = mkdtempSync(join(tmpdir(), "imagelet-dump-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function readBack(text: string, name: string): ImageletConfig {
  const file = join(dir, name);
  writeFileSync(file, text);
  return configFromSource(readConfigSource(file), definitions);
}

/** What must survive the round trip: everything but where the file was. */
const inForce = ({ file: _f, baseDir: _b, ...rest }: ImageletConfig) => rest;

describe("imagelet config's TOML", () => {
  test("every top-level key set to a value other than its default reads back the same", () => {
    const original = readBack(
      [
        `socket = "${dir}/s.sock"`,
        `socket_group = "kube"`,
        `log_level = "debug"`,
        `plugin_dir = "${dir}"`,
        `backend_timeout = "1500ms"`,
        `poll_interval = "3s"`,
        `fs_info_interval = "2m"`,
        `handshake_timeout = "1s"`,
        `idle_timeout = "30s"`,
        `keepalive_time = "45s"`,
        `keepalive_timeout = "750ms"`,
        `pinned_images = ["docker.io/library/busybox:1.36", "quay.io/edge/*", "*pause*"]`,
        `[mirror]`,
        `listen = "[::1]:5051"`,
        `[[backend]]`,
        `type = "oci-layout"`,
        `path = "/layout \\"quoted\\""`,
        `repository = "localhost/x"`,
        `writable = true`,
        `timeout = "1s"`,
        `[[backend]]`,
        `type = "exec"`,
        `name = "vendor"`,
        `args = ["--a", "b c"]`,
      ].join("\n"),
      "full.toml",
    );
    // Guards the fixture itself: a key added to SETTINGS must be set here to a non-default value.
    for (const [key, setting] of Object.entries({ ...SETTINGS, ...MIRROR_SETTINGS })) expect({ key, v: setting.of(original) }).not.toEqual({ key, v: setting.default });
    const text = configToml(original, definitions);
    const again = readBack(text, "again.toml");
    expect(inForce(again)).toEqual(inForce(original));
    expect(configToml(again, definitions).split("\n").slice(2)).toEqual(text.split("\n").slice(2));
  });

  test("defaults are written out; unset keys are comments", () => {
    const text = configToml(readBack("", "empty.toml"), definitions);
    expect(text).toContain('\nbackend_timeout = "2s"\n');
    expect(text).toContain('\n# socket_group = ...   (unset)\n');
    // The default plugin_dir need not exist; a configured one must, so it stays a comment.
    expect(text).toContain('\n# plugin_dir = "/usr/lib/imagelet/plugins"   (the default; unset)\n');
  });

  test("without a file: the well-known stores found, which read back as the same backends", () => {
    const found = defaultConfig((p) => p === "/var/lib/imagelet/oci" || p === "/var/lib/docker");
    const text = configToml(found, definitions);
    expect(text).toContain("No config file");
    expect(inForce(readBack(text, "found.toml"))).toEqual(inForce(found));
  });

  test("a refused plugin's entry keeps its options", () => {
    const config = validateConfig({ backend: [{ type: "vendor", path: "/v", depth: 3 }] }, join(dir, "x.toml"), definitions, new Map([["vendor", "apiVersion 9"]]));
    const text = configToml(config, definitions);
    expect(text).toContain("# Its plugin is refused (apiVersion 9)");
    expect(text).toContain('type = "vendor"\nname = "vendor"\npath = "/v"\ndepth = 3\n');
  });

  test("nothing to serve is said only without a file and without a store", () => {
    expect(nothingToServe(defaultConfig(() => false))).toMatch(/^nothing to serve: no config file \(\/etc\/imagelet\/config.toml\) and none of the well-known stores \(\/var\/lib\/imagelet\/oci, .*--config FILE/);
    expect(nothingToServe(defaultConfig((p) => p === "/var/lib/docker"))).toBeUndefined();
    expect(nothingToServe(readBack("", "none.toml"))).toBeUndefined();
  });
});
