// docs/configuration.md cannot drift from the code: its tables are read here
// and compared, key by key, with the tables the parser itself uses (SETTINGS,
// ENTRY_KEYS, WELL_KNOWN_STORES) and with each built-in backend's option schema.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { builtinBackends } from "../../src/backends/index";
import { BACKEND_KEY, ENTRY_KEYS, MIRROR_KEY, MIRROR_SETTINGS, SETTINGS, WELL_KNOWN_STORES, type Setting } from "../../src/config/config";
import { DEFAULT_PLUGIN_DIR } from "../../src/plugins/load";

const PAGE = join(import.meta.dir, "..", "..", "docs", "configuration.md");
const page = readFileSync(PAGE, "utf8");

interface Row {
  key: string;
  cells: string[];
}

/** The body of the section under `heading` (up to the next heading of the same or a higher level). */
function section(heading: string): string | undefined {
  const lines = page.split("\n");
  const level = heading.indexOf(" ");
  const start = lines.indexOf(heading);
  if (start < 0) return undefined;
  const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && l.indexOf(" ") <= level);
  return lines.slice(start + 1, end < 0 ? undefined : end).join("\n");
}

/** The rows of the tables in a section whose first cell is a `code` key. */
function rows(body: string): Row[] {
  return body
    .split("\n")
    .filter((l) => /^\| `[^`]+` \|/.test(l))
    .map((l) => {
      const cells = l.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
      return { key: cells[0]!.slice(1, -1), cells: cells.slice(1) };
    });
}

/** Keys in the code and not on the page, and on the page and not in the code. */
function difference(code: readonly string[], documented: readonly string[]) {
  return {
    undocumented: code.filter((k) => !documented.includes(k)),
    notInCode: documented.filter((k) => !code.includes(k)),
  };
}

const backendHeadings = [...page.matchAll(/^### `([^`]+)`$/gm)].map((m) => m[1]!);
const definitions = builtinBackends({ pluginDir: DEFAULT_PLUGIN_DIR, allowInsecure: false });

describe("docs/configuration.md", () => {
  test("top-level keys: the page's table is SETTINGS (and [[backend]]), with each type and default", () => {
    const body = section("## Top-level keys");
    expect(body).toBeDefined();
    const documented = rows(body!);
    expect(difference([...Object.keys(SETTINGS), BACKEND_KEY, MIRROR_KEY], documented.map((r) => r.key))).toEqual({ undocumented: [], notInCode: [] });
    for (const { key, cells } of documented) {
      if (key === BACKEND_KEY || key === MIRROR_KEY) continue;
      const setting = SETTINGS[key as keyof typeof SETTINGS] as Setting<unknown>;
      const [type, def] = cells;
      expect({ key, type }).toEqual({ key, type: setting.type });
      const expected = setting.default === undefined ? "unset" : `\`${JSON.stringify(setting.toToml(setting.default))}\``;
      expect({ key, default: def }).toEqual({ key, default: expected });
    }
  });

  test("[mirror]: the page's table is MIRROR_SETTINGS, with each type and default", () => {
    const documented = rows(section("## `[mirror]`") ?? "");
    expect(difference(Object.keys(MIRROR_SETTINGS), documented.map((r) => r.key))).toEqual({ undocumented: [], notInCode: [] });
    for (const { key, cells } of documented) {
      const setting = MIRROR_SETTINGS[key as keyof typeof MIRROR_SETTINGS] as Setting<unknown>;
      expect({ key, type: cells[0], default: cells[1] }).toEqual({ key, type: setting.type, default: `\`${JSON.stringify(setting.toToml(setting.default))}\`` });
    }
  });

  test("keys of every [[backend]] entry", () => {
    const documented = rows(section("### Keys of every entry") ?? "");
    expect(difference(Object.keys(ENTRY_KEYS), documented.map((r) => r.key))).toEqual({ undocumented: [], notInCode: [] });
    for (const { key, cells } of documented) {
      const spec = ENTRY_KEYS[key as keyof typeof ENTRY_KEYS];
      expect({ key, type: cells[0], required: cells[1] === "(required)" }).toEqual({ key, type: spec.type, required: spec.required });
    }
  });

  test("one section per built-in backend type, and none for a type the code does not have", () => {
    expect(difference(definitions.map((d) => d.name), backendHeadings)).toEqual({ undocumented: [], notInCode: [] });
  });

  for (const definition of definitions) {
    test(`backend ${definition.name}: every option, its type and whether it is required`, () => {
      const documented = rows(section(`### \`${definition.name}\``) ?? "");
      expect(difference(Object.keys(definition.options), documented.map((r) => r.key))).toEqual({ undocumented: [], notInCode: [] });
      for (const { key, cells } of documented) {
        const spec = definition.options[key]!;
        expect({ key, type: cells[0], required: cells[1] === "(required)" }).toEqual({ key, type: spec.type, required: spec.required === true });
      }
    });
  }

  test("the well-known stores, in the code's order, with their types and names", () => {
    const documented = rows(section("## Without a config file") ?? "");
    expect(documented.map((r) => [r.key, r.cells[0], r.cells[1]!.split(" ")[0]])).toEqual(
      WELL_KNOWN_STORES.map((s) => [s.path, `\`${s.type}\``, `\`${s.name}\``]),
    );
  });
});
