// imagelet's configuration: a TOML file validated strictly. An unknown key or
// a wrong type is an error naming the file and the key (exit code 2), because
// a silently ignored typo on a device nobody watches is worse than a refusal.
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { BackendDefinition, OptionSpec } from "../backend/contract";
import { LOG_LEVELS, type LogLevel } from "../log";
import { PinnedImages, PinnedPatternError } from "../model/pinned";
import { DEFAULT_PLUGIN_DIR } from "../plugins/load";
import { endpointTarget } from "../runtime/endpoint";
import { formatListenAddress, parseListenAddress, type ListenAddress } from "./listen";

export const DEFAULT_CONFIG_FILE = "/etc/imagelet/config.toml";
export const DEFAULT_SOCKET = "/run/imagelet/imagelet.sock";
export const DEFAULT_BACKEND_TIMEOUT_MS = 2000;
export const DEFAULT_POLL_INTERVAL_MS = 10_000;
export const DEFAULT_FS_INFO_INTERVAL_MS = 60_000;
/** The deadline of each call imagelet makes to the runtime, PullImage excepted (src/runtime/client.ts). */
export const DEFAULT_RUNTIME_TIMEOUT_MS = 10_000;
/** How long a pull of a preloaded image may run with no request for it reaching the mirror (src/runtime/preload.ts). */
export const DEFAULT_MIRROR_WAIT_MS = 5_000;

/**
 * How long imagelet keeps a client connection that does nothing useful
 * (docs/reliability.md): one that never completes the HTTP/2 handshake, one
 * without calls, one whose client stopped reading (it then answers no ping).
 */
export interface ConnectionTimeouts {
  /** The client's HTTP/2 preface and first SETTINGS must arrive within this. */
  handshakeMs: number;
  /** A connection without a call for this long is closed with GOAWAY; gRPC clients reconnect on their next call. */
  idleMs: number;
  /** Each connection is pinged after this long without one... */
  keepaliveMs: number;
  /** ...and closed when the client has not answered within this. */
  keepaliveTimeoutMs: number;
}

export const DEFAULT_CONNECTION_TIMEOUTS: ConnectionTimeouts = {
  handshakeMs: 10_000,
  idleMs: 5 * 60_000,
  keepaliveMs: 60_000,
  keepaliveTimeoutMs: 20_000,
};

/**
 * Stores imagelet looks for when there is no config file, in this order.
 * Later backends add their own well-known roots here.
 */
export const WELL_KNOWN_STORES: readonly { type: string; name: string; path: string }[] = [
  { type: "oci-layout", name: "imagelet-oci", path: "/var/lib/imagelet/oci" },
  { type: "archives", name: "imagelet-archives", path: "/var/lib/imagelet/archives" },
  { type: "containers-storage", name: "containers-storage", path: "/var/lib/containers/storage" },
  { type: "docker", name: "docker", path: "/var/lib/docker" },
  { type: "isulad", name: "isulad", path: "/var/lib/isulad" },
  { type: "containerd", name: "containerd", path: "/var/lib/containerd" },
  { type: "containerd", name: "k3s", path: "/var/lib/rancher/k3s/agent/containerd" },
  { type: "containerd", name: "microk8s", path: "/var/snap/microk8s/common/var/lib/containerd" },
];

export interface BackendConfig {
  type: string;
  name: string;
  timeoutMs: number;
  options: Record<string, unknown>;
  /** Why its type cannot be used (its plugin was refused): the backend is shown failing with this. */
  unavailable?: string;
}

/** `[mirror]`: the read-only registry mirror (docs/mirror.md). */
export interface MirrorConfig {
  listen: ListenAddress;
}

export interface ImageletConfig {
  /** The file this came from, if any. */
  file?: string;
  baseDir: string;
  socket: string;
  /** Directory of backend plugins (plugin_dir). */
  pluginDir?: string;
  /** Group to give the socket (name or gid); unset keeps the process's group. */
  socketGroup?: string;
  backendTimeoutMs: number;
  pollIntervalMs: number;
  /** How often ImageFsInfo's disk usage is measured. */
  fsInfoIntervalMs: number;
  connectionTimeouts: ConnectionTimeouts;
  logLevel: LogLevel;
  backends: BackendConfig[];
  /** pinned_images: CRI-O's patterns of images kubelet's GC must keep (src/model/pinned.ts). */
  pinnedImages?: string[];
  /** Undefined without a `[mirror]` table: then no mirror runs, and none of its code is loaded. */
  mirror?: MirrorConfig;
  /** `[runtime]`: front mode, set only when `endpoint` is (docs/kubelet.md#front-mode). */
  runtime?: RuntimeConfig;
}

/** The node's container runtime, reached through its CRI socket. */
export interface RuntimeConfig {
  /** `unix:///run/containerd/containerd.sock`, as kubelet's `--container-runtime-endpoint` names it. */
  endpoint: string;
  timeoutMs: number;
  mirrorWaitMs: number;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly key: string,
    message: string,
  ) {
    super(`${file}: ${key}: ${message}`);
    this.name = "ConfigError";
  }
}

/** "500ms", "2s", "1.5m" → milliseconds. */
export function parseDuration(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as "ms" | "s" | "m"];
  return n > 0 ? Math.round(n) : undefined;
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  if (v instanceof Date) return "date";
  return typeof v;
}

function checkOption(spec: OptionSpec, v: unknown): boolean {
  switch (spec.type) {
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "boolean":
      return typeof v === "boolean";
    case "string[]":
      return Array.isArray(v) && v.every((x) => typeof x === "string");
  }
}

/** milliseconds → the shortest duration text parseDuration reads back to the same value. */
export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/**
 * A top-level key of the config file. The table of them below is the one
 * place a key exists: validation accepts exactly its keys, `imagelet config`
 * prints them, and test/unit/config-doc.test.ts holds docs/configuration.md
 * to them, so a key cannot be added without its documentation line.
 */
export interface Setting<T, D extends T | undefined = T | undefined> {
  /** The type as docs/configuration.md names it. */
  type: "string" | "path" | "duration" | "log level" | "string[]" | "host:port";
  /** The value when the key is absent; undefined: unset. */
  default: D;
  /** The TOML value → the value, or the error message. */
  parse(value: unknown, baseDir: string): T | { error: string };
  /** The value → its TOML value. */
  toToml(value: T): string | string[];
  /** The value in force, read back from a configuration (for `imagelet config`). */
  of(config: ImageletConfig): T | undefined;
}

/** What a Setting's parse refused, or undefined for a value. */
export function refusal(parsed: unknown): string | undefined {
  return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) && "error" in parsed ? String(parsed.error) : undefined;
}

const stringSetting = <D extends string | undefined>(type: "string" | "path", def: D, of: (c: ImageletConfig) => string | undefined): Setting<string, D> => ({
  type,
  default: def,
  parse: (v, baseDir) => (typeof v !== "string" ? { error: `expected a string, got ${typeName(v)}` } : type === "path" ? resolve(baseDir, v) : v),
  toToml: (v) => v,
  of,
});

const durationSetting = (def: number, of: (c: ImageletConfig) => number): Setting<number, number> => ({
  type: "duration",
  default: def,
  parse: (v) => (typeof v === "string" ? parseDuration(v) : undefined) ?? { error: `expected a duration such as "500ms" or "2s", got ${JSON.stringify(v)}` },
  toToml: formatDuration,
  of,
});

const logLevelSetting: Setting<LogLevel, LogLevel> = {
  type: "log level",
  default: "info",
  parse: (v) => ((LOG_LEVELS as readonly unknown[]).includes(v) ? (v as LogLevel) : { error: `expected one of ${LOG_LEVELS.join(", ")}` }),
  toToml: (v) => v,
  of: (c) => c.logLevel,
};

/** pinned_images: CRI-O's patterns (src/model/pinned.ts), each checked when the file is read. */
const pinnedImagesSetting: Setting<string[], string[]> = {
  type: "string[]",
  default: [],
  parse: (v) => {
    if (!Array.isArray(v) || !v.every((p) => typeof p === "string")) return { error: `expected an array of strings, got ${typeName(v)}` };
    try {
      new PinnedImages(v);
    } catch (e) {
      if (e instanceof PinnedPatternError) return { error: e.message };
      throw e;
    }
    return v;
  },
  toToml: (v) => v,
  of: (c) => c.pinnedImages,
};

/** The top-level keys, in the order `imagelet config` prints them. `[[backend]]` is ENTRY_KEYS' and the definitions'. */
export const SETTINGS = {
  socket: stringSetting("path", DEFAULT_SOCKET, (c) => c.socket),
  socket_group: stringSetting("string", undefined, (c) => c.socketGroup),
  log_level: logLevelSetting,
  plugin_dir: stringSetting("path", DEFAULT_PLUGIN_DIR, (c) => c.pluginDir),
  backend_timeout: durationSetting(DEFAULT_BACKEND_TIMEOUT_MS, (c) => c.backendTimeoutMs),
  poll_interval: durationSetting(DEFAULT_POLL_INTERVAL_MS, (c) => c.pollIntervalMs),
  fs_info_interval: durationSetting(DEFAULT_FS_INFO_INTERVAL_MS, (c) => c.fsInfoIntervalMs),
  handshake_timeout: durationSetting(DEFAULT_CONNECTION_TIMEOUTS.handshakeMs, (c) => c.connectionTimeouts.handshakeMs),
  idle_timeout: durationSetting(DEFAULT_CONNECTION_TIMEOUTS.idleMs, (c) => c.connectionTimeouts.idleMs),
  keepalive_time: durationSetting(DEFAULT_CONNECTION_TIMEOUTS.keepaliveMs, (c) => c.connectionTimeouts.keepaliveMs),
  keepalive_timeout: durationSetting(DEFAULT_CONNECTION_TIMEOUTS.keepaliveTimeoutMs, (c) => c.connectionTimeouts.keepaliveTimeoutMs),
  pinned_images: pinnedImagesSetting,
} satisfies Record<string, Setting<string> | Setting<number> | Setting<string[]>>;

/** The runtime's CRI socket: kubelet's form, checked as the runtime client will dial it. */
const endpointSetting: Setting<string, undefined> = {
  type: "string",
  default: undefined,
  parse: (v) => {
    if (typeof v !== "string") return { error: `expected a string, got ${typeName(v)}` };
    try {
      endpointTarget(v);
    } catch (e) {
      return { error: (e as Error).message };
    }
    return v;
  },
  toToml: (v) => v,
  of: (c) => c.runtime?.endpoint,
};

/**
 * The keys of the `[runtime]` table (front mode). Like SETTINGS, the one place
 * they exist: validation, `imagelet config` and docs/configuration.md's
 * `[runtime]` table are held to it.
 */
export const RUNTIME_SETTINGS = {
  endpoint: endpointSetting,
  timeout: durationSetting(DEFAULT_RUNTIME_TIMEOUT_MS, (c) => c.runtime?.timeoutMs ?? DEFAULT_RUNTIME_TIMEOUT_MS),
  mirror_wait: durationSetting(DEFAULT_MIRROR_WAIT_MS, (c) => c.runtime?.mirrorWaitMs ?? DEFAULT_MIRROR_WAIT_MS),
} satisfies Record<string, Setting<string> | Setting<number>>;

/** The top-level key holding the `[runtime]` table. */
export const RUNTIME_KEY = "runtime";

/** A table's values once defaults are applied: possibly undefined only for a key without a default. */
type TableValues<S> = { [K in keyof S]: S[K] extends Setting<infer T, infer D> ? (undefined extends D ? T | undefined : T) : never };

/**
 * A top-level table (`[mirror]`, `[runtime]`) read by its settings: each key
 * parsed, an absent one at its default; undefined without the table. An
 * unknown key or a bad value names `<table>.<key>`.
 */
function readTable<S extends Record<string, object>>(raw: unknown, name: string, settings: S, file: string, baseDir: string): TableValues<S> | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw) || raw instanceof Date) throw new ConfigError(file, name, `expected a [${name}] table, got ${typeName(raw)}`);
  const table = raw as Record<string, unknown>;
  for (const key of Object.keys(table)) if (!Object.hasOwn(settings, key)) throw new ConfigError(file, `${name}.${key}`, "unknown key");
  const values: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(settings) as [string, Setting<unknown>][]) {
    if (table[key] === undefined) {
      values[key] = setting.default;
      continue;
    }
    const parsed = setting.parse(table[key], baseDir);
    const refused = refusal(parsed);
    if (refused !== undefined) throw new ConfigError(file, `${name}.${key}`, refused);
    values[key] = parsed;
  }
  return values as TableValues<S>;
}

/** `[runtime]` → front mode's settings; undefined without the table. */
function readRuntime(raw: unknown, file: string, baseDir: string): RuntimeConfig | undefined {
  const table = readTable(raw, RUNTIME_KEY, RUNTIME_SETTINGS, file, baseDir);
  if (table === undefined) return undefined;
  if (table.endpoint === undefined) throw new ConfigError(file, `${RUNTIME_KEY}.endpoint`, "missing (the runtime's CRI socket, e.g. \"unix:///run/containerd/containerd.sock\")");
  return { endpoint: table.endpoint, timeoutMs: table.timeout, mirrorWaitMs: table.mirror_wait };
}

export type SettingKey = keyof typeof SETTINGS;
/** Each key's value once defaults are applied: possibly undefined only for a key without a default. */
type SettingValues = { [K in SettingKey]: (typeof SETTINGS)[K] extends Setting<infer T, infer D> ? (undefined extends D ? T | undefined : T) : never };

/** The keys every `[[backend]]` entry has besides its type's options (documented with them). */
export const ENTRY_KEYS = {
  type: { type: "string", required: true },
  name: { type: "string", required: false },
  timeout: { type: "duration", required: false },
} as const;

/** The top-level key holding the `[[backend]]` tables. */
export const BACKEND_KEY = "backend";

/** The top-level key of the `[mirror]` table. */
export const MIRROR_KEY = "mirror";

/** Loopback: only this machine's runtimes can read the images (docs/mirror.md, "Security"). */
export const DEFAULT_MIRROR_LISTEN: ListenAddress = { host: "127.0.0.1", port: 5050 };

/** The keys of `[mirror]`, in the order `imagelet config` prints them (docs/configuration.md, "[mirror]"). */
export const MIRROR_SETTINGS = {
  listen: {
    type: "host:port",
    default: DEFAULT_MIRROR_LISTEN,
    parse: (v) => (typeof v === "string" ? parseListenAddress(v) : { error: `expected a string such as "127.0.0.1:5050", got ${typeName(v)}` }),
    toToml: formatListenAddress,
    of: (c) => c.mirror?.listen,
  },
} satisfies Record<string, Setting<ListenAddress, ListenAddress>>;

/** `[mirror]` read from its table; undefined without one (no mirror). */
function readMirror(raw: unknown, file: string, baseDir: string): MirrorConfig | undefined {
  const table = readTable(raw, MIRROR_KEY, MIRROR_SETTINGS, file, baseDir);
  return table && { listen: table.listen };
}

/** Each top-level key read from `raw`: the given values, then the defaults; undefined only where the table has no default. */
function readSettings(raw: Record<string, unknown>, file: string, baseDir: string): { given: Partial<SettingValues>; values: SettingValues } {
  const given: Record<string, unknown> = {};
  const values: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS) as [SettingKey, Setting<unknown>][]) {
    const v = raw[key];
    if (v !== undefined) {
      const parsed = setting.parse(v, baseDir);
      const refused = refusal(parsed);
      if (refused !== undefined) throw new ConfigError(file, key, refused);
      given[key] = parsed;
    }
    const fallback = setting.default;
    values[key] = given[key] ?? (setting.type === "path" && typeof fallback === "string" ? resolve(baseDir, fallback) : fallback);
  }
  return { given: given as Partial<SettingValues>, values: values as SettingValues };
}

/** The configuration a given set of top-level values makes, with these backends. */
function assemble(values: SettingValues, given: Partial<SettingValues>, backends: BackendConfig[], baseDir: string, file?: string, runtime?: RuntimeConfig): ImageletConfig {
  return {
    file,
    baseDir,
    socket: values.socket,
    socketGroup: values.socket_group,
    // Kept unset when not configured: a configured plugin_dir must exist, the default need not.
    pluginDir: given.plugin_dir,
    backendTimeoutMs: values.backend_timeout,
    pollIntervalMs: values.poll_interval,
    fsInfoIntervalMs: values.fs_info_interval,
    connectionTimeouts: {
      handshakeMs: values.handshake_timeout,
      idleMs: values.idle_timeout,
      keepaliveMs: values.keepalive_time,
      keepaliveTimeoutMs: values.keepalive_timeout,
    },
    logLevel: values.log_level,
    backends,
    pinnedImages: values.pinned_images,
    runtime,
  };
}

/**
 * Validates parsed TOML against the top-level keys and each backend
 * definition's option schema. A type in `unavailable` (a refused plugin's,
 * with the reason) is not an error: its entries are kept, unvalidated, to be
 * shown failing while the rest is served.
 */
export function validateConfig(
  raw: Record<string, unknown>,
  file: string,
  definitions: readonly BackendDefinition[],
  unavailable: ReadonlyMap<string, string> = new Map(),
): ImageletConfig {
  const err = (key: string, msg: string) => new ConfigError(file, key, msg);
  for (const key of Object.keys(raw)) if (key !== BACKEND_KEY && key !== MIRROR_KEY && key !== RUNTIME_KEY && !Object.hasOwn(SETTINGS, key)) throw err(key, "unknown key");
  const baseDir = dirname(resolve(file));
  const { given, values } = readSettings(raw, file, baseDir);
  const runtime = readRuntime(raw[RUNTIME_KEY], file, baseDir);
  // An entry's timeout reads as backend_timeout does.
  const entryTimeout = (key: string, v: unknown): number => {
    if (v === undefined) return values.backend_timeout;
    const ms = SETTINGS.backend_timeout.parse(v, baseDir);
    if (typeof ms !== "number") throw err(key, ms.error);
    return ms;
  };

  const entries = raw[BACKEND_KEY] ?? [];
  if (!Array.isArray(entries)) throw err(BACKEND_KEY, "expected [[backend]] tables");
  const names = new Set<string>();
  const backends = entries.map((entry: unknown, i): BackendConfig => {
    const at = `backend[${i}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw err(at, "expected a table");
    const e = entry as Record<string, unknown>;
    if (typeof e.type !== "string") throw err(`${at}.type`, e.type === undefined ? "missing" : `expected a string, got ${typeName(e.type)}`);
    const definition = definitions.find((d) => d.name === e.type);
    const refusal = definition ? undefined : unavailable.get(e.type);
    if (!definition && refusal === undefined) {
      throw err(`${at}.type`, `unknown backend type ${JSON.stringify(e.type)} (known: ${definitions.map((d) => d.name).join(", ")})`);
    }
    if (e.name !== undefined && (typeof e.name !== "string" || e.name === "")) throw err(`${at}.name`, "expected a non-empty string");
    const name = (e.name as string | undefined) ?? (names.has(e.type) ? `${e.type}-${i}` : e.type);
    if (names.has(name)) throw err(`${at}.name`, `duplicate backend name ${JSON.stringify(name)}`);
    names.add(name);
    const timeoutMs = entryTimeout(`${at}.timeout`, e.timeout);
    const options: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(e)) {
      if (Object.hasOwn(ENTRY_KEYS, key)) continue;
      // A refused plugin's options cannot be checked; they are kept so `imagelet config` still prints them.
      if (!definition) {
        options[key] = value;
        continue;
      }
      const spec = definition.options[key];
      if (!spec) throw err(`${at}.${key}`, `unknown key for backend type ${JSON.stringify(e.type)}`);
      if (!checkOption(spec, value)) throw err(`${at}.${key}`, `expected ${spec.type}, got ${typeName(value)}`);
      options[key] = value;
    }
    if (!definition) return { type: e.type, name, timeoutMs, options, unavailable: refusal };
    for (const [key, spec] of Object.entries(definition.options)) {
      if (spec.required && options[key] === undefined) throw err(`${at}.${key}`, "missing");
    }
    return { type: e.type, name, timeoutMs, options };
  });

  return { ...assemble(values, given, backends, baseDir, resolve(file), runtime), mirror: readMirror(raw[MIRROR_KEY], file, baseDir) };
}

/** A config file parsed but not yet validated (plugins must load first to know their types). */
export interface ConfigSource {
  file?: string;
  raw: Record<string, unknown>;
}

/**
 * `--config FILE` must exist; without it, DEFAULT_CONFIG_FILE is used when
 * present, else there is no file and the well-known stores are used.
 */
export function readConfigSource(file: string | undefined, exists: (path: string) => boolean = existsSync): ConfigSource {
  const path = file ?? (exists(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (path === undefined) return { raw: {} };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(path, "(file)", `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(text);
  } catch (e) {
    throw new ConfigError(path, "(syntax)", `not valid TOML: ${(e as Error).message.split("\n")[0]}`);
  }
  return { file: path, raw: raw as Record<string, unknown> };
}

/** plugin_dir from a config source, checked early because plugins load before validation. */
export function pluginDirOf(source: ConfigSource): string | undefined {
  const v = source.raw.plugin_dir;
  if (v === undefined) return undefined;
  const dir = SETTINGS.plugin_dir.parse(v, dirname(resolve(source.file ?? ".")));
  if (typeof dir !== "string") throw new ConfigError(source.file ?? "(defaults)", "plugin_dir", dir.error);
  return dir;
}

/** Validates a config source against the known backend types (and those of refused plugins). */
export function configFromSource(
  source: ConfigSource,
  definitions: readonly BackendDefinition[],
  unavailable?: ReadonlyMap<string, string>,
): ImageletConfig {
  if (source.file === undefined) return defaultConfig();
  return validateConfig(source.raw, source.file, definitions, unavailable);
}

/** The configuration used when no file exists: the table's defaults and the well-known stores that are present. */
export function defaultConfig(exists: (path: string) => boolean = existsSync): ImageletConfig {
  const baseDir = process.cwd();
  const { given, values } = readSettings({}, "(defaults)", baseDir);
  const backends = WELL_KNOWN_STORES.filter((s) => exists(s.path)).map((s) => ({
    type: s.type,
    name: s.name,
    timeoutMs: values.backend_timeout,
    options: { path: s.path },
  }));
  return assemble(values, given, backends, baseDir);
}

/**
 * The one line said when there is neither a config file nor any well-known
 * store: an empty table alone would not tell an operator where imagelet looked.
 * Undefined when there is something to serve or a file says what to serve.
 */
export function nothingToServe(config: ImageletConfig): string | undefined {
  if (config.file !== undefined || config.backends.length > 0) return undefined;
  return (
    `nothing to serve: no config file (${DEFAULT_CONFIG_FILE}) and none of the well-known stores ` +
    `(${WELL_KNOWN_STORES.map((s) => s.path).join(", ")}); name the stores in a file given with --config FILE ` +
    `(docs/configuration.md)`
  );
}
