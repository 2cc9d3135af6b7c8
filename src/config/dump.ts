// The configuration in force as TOML (`imagelet config`), written from the
// same table validation reads (SETTINGS), so what it prints reads back to the
// same configuration: it can be saved as a starting config file.
import type { BackendDefinition, OptionSpec } from "../backend/contract";
import { DEFAULT_CONFIG_FILE, MIRROR_KEY, MIRROR_SETTINGS, SETTINGS, WELL_KNOWN_STORES, formatDuration, type ImageletConfig, type Setting } from "./config";

/** A TOML key: bare when TOML allows it, else quoted. */
function tomlKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
}

/**
 * A TOML value. JSON's string escapes (\" \\ \n \t \uXXXX …) are all valid in a
 * TOML basic string, so JSON.stringify writes strings and string arrays.
 */
function tomlValue(v: unknown): string {
  if (typeof v === "string" || typeof v === "boolean") return JSON.stringify(v);
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(", ")}]`;
  // Option values are checked against their schema (string, number, boolean, string[]) before they get here.
  throw new Error(`cannot write ${typeof v} as TOML`);
}

function describeOption(key: string, spec: OptionSpec): string {
  return `# ${key} (${spec.type}${spec.required ? ", required" : ""}): unset${spec.description ? `; ${spec.description}` : ""}`;
}

/** `[mirror]` with its values in force; without one, the table as a comment (no mirror runs). */
function mirrorToml(config: ImageletConfig): string[] {
  const keys = Object.entries(MIRROR_SETTINGS) as [string, Setting<unknown>][];
  if (config.mirror === undefined) {
    return [
      `# No [${MIRROR_KEY}]: imagelet serves no registry mirror (docs/mirror.md). To serve one:`,
      `# [${MIRROR_KEY}]`,
      ...keys.map(([key, setting]) => `# ${key} = ${tomlValue(setting.toToml(setting.default))}`),
    ];
  }
  return [`[${MIRROR_KEY}]`, ...keys.map(([key, setting]) => `${key} = ${tomlValue(setting.toToml(setting.of(config) ?? setting.default))}`)];
}

/**
 * The TOML text of `config`. Top-level keys come with their values in force
 * (defaults filled in); a key that is unset is written as a comment. Backend
 * options are written as given; the options a type has and that are not set
 * are listed as comments with their descriptions.
 */
export function configToml(config: ImageletConfig, definitions: readonly BackendDefinition[]): string {
  const lines: string[] = [];
  lines.push("# imagelet: the configuration in force (`imagelet config`); every key is in docs/configuration.md.");
  if (config.file !== undefined) {
    lines.push(`# Read from ${config.file}.`);
  } else {
    lines.push(`# No config file (${DEFAULT_CONFIG_FILE} is absent): defaults, and the well-known stores found among`);
    lines.push(`# ${WELL_KNOWN_STORES.map((s) => s.path).join(", ")}.`);
    lines.push(`# Saved as ${DEFAULT_CONFIG_FILE}, exactly the [[backend]]s below are served.`);
  }
  lines.push("");
  for (const [key, setting] of Object.entries(SETTINGS) as [string, Setting<unknown>][]) {
    const value = setting.of(config);
    if (value !== undefined) lines.push(`${key} = ${tomlValue(setting.toToml(value))}`);
    else if (setting.default !== undefined) lines.push(`# ${key} = ${tomlValue(setting.toToml(setting.default))}   (the default; unset)`);
    else lines.push(`# ${key} = ...   (unset)`);
  }
  lines.push("", ...mirrorToml(config));
  if (config.backends.length === 0) {
    lines.push("", "# No [[backend]]: nothing is served. Add one, for example:", "# [[backend]]", '# type = "oci-layout"', '# path = "/var/lib/imagelet/oci"');
  }
  // Only a backend knows which of its options are paths; they are written as given.
  if (config.file !== undefined && config.backends.length > 0) {
    lines.push("", "# A relative path in a [[backend]] option is resolved against the directory of the file that holds it.");
  }
  for (const backend of config.backends) {
    lines.push("");
    if (backend.unavailable !== undefined) lines.push(`# Its plugin is refused (${backend.unavailable}): its options are not checked.`);
    lines.push("[[backend]]", `type = ${tomlValue(backend.type)}`, `name = ${tomlValue(backend.name)}`);
    if (backend.timeoutMs !== config.backendTimeoutMs) lines.push(`timeout = ${tomlValue(formatDuration(backend.timeoutMs))}`);
    for (const [key, value] of Object.entries(backend.options)) lines.push(`${tomlKey(key)} = ${tomlValue(value)}`);
    const definition = definitions.find((d) => d.name === backend.type);
    for (const [key, spec] of Object.entries(definition?.options ?? {})) {
      if (backend.options[key] === undefined) lines.push(describeOption(key, spec));
    }
  }
  return `${lines.join("\n")}\n`;
}
