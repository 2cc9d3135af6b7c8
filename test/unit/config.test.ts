import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinBackends as builtinsFor } from "../../src/backends/index";
import { ConfigError, DEFAULT_CONNECTION_TIMEOUTS, configFromSource, defaultConfig, parseDuration, readConfigSource, validateConfig } from "../../src/config/config";
import { DEFAULT_PLUGIN_DIR } from "../../src/plugins/load";

const builtinBackends = builtinsFor({ pluginDir: DEFAULT_PLUGIN_DIR, allowInsecure: false });

const dir = mkdtempSync(join(tmpdir(), "imagelet-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
function load(text: string) {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(file, text);
  return { file, config: () => configFromSource(readConfigSource(file), builtinBackends) };
}

describe("config", () => {
  test("a full config parses, with relative paths against the file's directory", () => {
    const { config } = load(`socket = "run/x.sock"\nbackend_timeout = "500ms"\npoll_interval = "30s"\nlog_level = "debug"\n[[backend]]\ntype = "oci-layout"\nname = "main"\npath = "layout"\ntimeout = "1s"\n[[backend]]\ntype = "oci-layout"\npath = "/other"\n`);
    const c = config();
    expect(c.socket).toBe(join(dir, "run/x.sock"));
    expect(c.backendTimeoutMs).toBe(500);
    expect(c.pollIntervalMs).toBe(30_000);
    expect(c.logLevel).toBe("debug");
    expect(c.backends).toEqual([
      { type: "oci-layout", name: "main", timeoutMs: 1000, options: { path: "layout" } },
      { type: "oci-layout", name: "oci-layout", timeoutMs: 500, options: { path: "/other" } },
    ]);
    expect(c.baseDir).toBe(dir);
  });

  test("[mirror]: absent is no mirror; an empty table the default address; bad keys and values name mirror.<key>", () => {
    expect(load("").config().mirror).toBeUndefined();
    expect(load("[mirror]\n").config().mirror).toEqual({ listen: { host: "127.0.0.1", port: 5050 } });
    expect(load(`[mirror]\nlisten = "0.0.0.0:80"\n`).config().mirror).toEqual({ listen: { host: "0.0.0.0", port: 80 } });
    expect(() => load(`[mirror]\nlisten = "5050"\n`).config()).toThrow(/: mirror\.listen: expected HOST:PORT/);
    expect(() => load(`[mirror]\nlisten = 5050\n`).config()).toThrow(/: mirror\.listen: expected a string/);
    expect(() => load(`[mirror]\nport = 5050\n`).config()).toThrow(/: mirror\.port: unknown key/);
    expect(() => load(`mirror = "127.0.0.1:5050"\n`).config()).toThrow(/: mirror: expected a \[mirror\] table/);
    expect(() => load(`[[mirror]]\nlisten = "127.0.0.1:1"\n`).config()).toThrow(/: mirror: expected a \[mirror\] table/);
    expect(defaultConfig(() => false).mirror).toBeUndefined();
  });

  test("connection timeouts: defaults, and each key read", () => {
    expect(load("").config().connectionTimeouts).toEqual(DEFAULT_CONNECTION_TIMEOUTS);
    expect(DEFAULT_CONNECTION_TIMEOUTS).toEqual({ handshakeMs: 10_000, idleMs: 300_000, keepaliveMs: 60_000, keepaliveTimeoutMs: 20_000 });
    const { config } = load(`handshake_timeout = "1s"\nidle_timeout = "2m"\nkeepalive_time = "30s"\nkeepalive_timeout = "500ms"\n`);
    expect(config().connectionTimeouts).toEqual({ handshakeMs: 1000, idleMs: 120_000, keepaliveMs: 30_000, keepaliveTimeoutMs: 500 });
    expect(() => load(`idle_timeout = "forever"`).config()).toThrow(/: idle_timeout: expected a duration/);
  });

  const errors: [string, string, RegExp][] = [
    ["unknown top-level key", `sockett = "x"`, /: sockett: unknown key/],
    ["wrong type", `socket = 3`, /: socket: expected a string, got number/],
    ["bad duration", `backend_timeout = 2`, /: backend_timeout: expected a duration/],
    ["bad log level", `log_level = "loud"`, /: log_level: expected one of/],
    ["unknown backend type", `[[backend]]\ntype = "nope"`, /: backend\[0\]\.type: unknown backend type "nope"/],
    ["missing type", `[[backend]]\npath = "x"`, /: backend\[0\]\.type: missing/],
    ["unknown backend key", `[[backend]]\ntype = "oci-layout"\npath = "x"\npaht = "y"`, /: backend\[0\]\.paht: unknown key for backend type "oci-layout"/],
    ["wrong option type", `[[backend]]\ntype = "oci-layout"\npath = 5`, /: backend\[0\]\.path: expected string, got number/],
    ["missing required option", `[[backend]]\ntype = "oci-layout"`, /: backend\[0\]\.path: missing/],
    ["duplicate names", `[[backend]]\ntype = "oci-layout"\nname = "a"\npath = "x"\n[[backend]]\ntype = "oci-layout"\nname = "a"\npath = "y"`, /backend\[1\]\.name: duplicate/],
    ["TOML syntax", `socket = `, /: \(syntax\): not valid TOML/],
  ];
  for (const [what, text, message] of errors) {
    test(`${what} names the file and the key`, () => {
      const { file, config } = load(text);
      expect(config).toThrow(ConfigError);
      expect(config).toThrow(message);
      expect(config).toThrow(file);
    });
  }

  test("a missing --config file is an error naming it", () => {
    expect(() => readConfigSource(join(dir, "absent.toml"))).toThrow(/absent.toml: \(file\): cannot read: ENOENT/);
  });

  test("without a file, the well-known stores that exist are used", () => {
    expect(defaultConfig(() => false).backends).toEqual([]);
    expect(defaultConfig((p) => p === "/var/lib/imagelet/oci").backends).toEqual([
      { type: "oci-layout", name: "imagelet-oci", timeoutMs: 2000, options: { path: "/var/lib/imagelet/oci" } },
    ]);
  });

  test("durations", () => {
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration("2m")).toBe(120_000);
    for (const bad of ["0s", "5", "-1s", "1h", "s"]) expect(parseDuration(bad)).toBeUndefined();
  });

  test("validateConfig rejects a non-table backend entry", () => {
    expect(() => validateConfig({ backend: ["x"] }, "f.toml", builtinBackends)).toThrow(/backend\[0\]: expected a table/);
  });
});
