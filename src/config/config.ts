// imagelet's configuration: a TOML file validated strictly. An unknown key or
// a wrong type is an error naming the file and the key (exit code 2), because
// a silently ignored typo on a device nobody watches is worse than a refusal.
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { BackendDefinition, OptionSpec } from "../backend/contract";
import { LOG_LEVELS, type LogLevel } from "../log";

export const DEFAULT_CONFIG_FILE = "/etc/imagelet/config.toml";
export const DEFAULT_SOCKET = "/run/imagelet/imagelet.sock";
export const DEFAULT_BACKEND_TIMEOUT_MS = 2000;
export const DEFAULT_POLL_INTERVAL_MS = 10_000;
export const DEFAULT_FS_INFO_INTERVAL_MS = 60_000;

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

const TOP_KEYS = new Set([
  "socket", "socket_group", "plugin_dir", "backend_timeout", "poll_interval", "fs_info_interval", "log_level", "backend",
  "handshake_timeout", "idle_timeout", "keepalive_time", "keepalive_timeout",
]);
const ENTRY_KEYS = new Set(["type", "name", "timeout"]);

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
  for (const key of Object.keys(raw)) if (!TOP_KEYS.has(key)) throw err(key, "unknown key");
  const str = (key: string): string | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw err(key, `expected a string, got ${typeName(v)}`);
    return v;
  };
  const duration = (key: string, v: unknown, fallback: number): number => {
    if (v === undefined) return fallback;
    const ms = typeof v === "string" ? parseDuration(v) : undefined;
    if (ms === undefined) throw err(key, `expected a duration such as "500ms" or "2s", got ${JSON.stringify(v)}`);
    return ms;
  };
  const logLevel = str("log_level") ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw err("log_level", `expected one of ${LOG_LEVELS.join(", ")}`);
  const backendTimeoutMs = duration("backend_timeout", raw.backend_timeout, DEFAULT_BACKEND_TIMEOUT_MS);
  const baseDir = dirname(resolve(file));

  const entries = raw.backend ?? [];
  if (!Array.isArray(entries)) throw err("backend", "expected [[backend]] tables");
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
    const timeoutMs = duration(`${at}.timeout`, e.timeout, backendTimeoutMs);
    if (!definition) return { type: e.type, name, timeoutMs, options: {}, unavailable: refusal };
    const options: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(e)) {
      if (ENTRY_KEYS.has(key)) continue;
      const spec = definition.options[key];
      if (!spec) throw err(`${at}.${key}`, `unknown key for backend type ${JSON.stringify(e.type)}`);
      if (!checkOption(spec, value)) throw err(`${at}.${key}`, `expected ${spec.type}, got ${typeName(value)}`);
      options[key] = value;
    }
    for (const [key, spec] of Object.entries(definition.options)) {
      if (spec.required && options[key] === undefined) throw err(`${at}.${key}`, "missing");
    }
    return { type: e.type, name, timeoutMs, options };
  });

  return {
    file: resolve(file),
    baseDir,
    socket: resolve(baseDir, str("socket") ?? DEFAULT_SOCKET),
    socketGroup: str("socket_group"),
    pluginDir: pluginDirOf({ file, raw }),
    backendTimeoutMs,
    pollIntervalMs: duration("poll_interval", raw.poll_interval, DEFAULT_POLL_INTERVAL_MS),
    fsInfoIntervalMs: duration("fs_info_interval", raw.fs_info_interval, DEFAULT_FS_INFO_INTERVAL_MS),
    connectionTimeouts: {
      handshakeMs: duration("handshake_timeout", raw.handshake_timeout, DEFAULT_CONNECTION_TIMEOUTS.handshakeMs),
      idleMs: duration("idle_timeout", raw.idle_timeout, DEFAULT_CONNECTION_TIMEOUTS.idleMs),
      keepaliveMs: duration("keepalive_time", raw.keepalive_time, DEFAULT_CONNECTION_TIMEOUTS.keepaliveMs),
      keepaliveTimeoutMs: duration("keepalive_timeout", raw.keepalive_timeout, DEFAULT_CONNECTION_TIMEOUTS.keepaliveTimeoutMs),
    },
    logLevel: logLevel as LogLevel,
    backends,
  };
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
  if (typeof v !== "string") throw new ConfigError(source.file ?? "(defaults)", "plugin_dir", `expected a string, got ${typeName(v)}`);
  return resolve(dirname(resolve(source.file ?? ".")), v);
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

/** The configuration used when no file exists: the well-known stores that are present. */
export function defaultConfig(exists: (path: string) => boolean = existsSync): ImageletConfig {
  return {
    baseDir: process.cwd(),
    socket: DEFAULT_SOCKET,
    backendTimeoutMs: DEFAULT_BACKEND_TIMEOUT_MS,
    pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
    fsInfoIntervalMs: DEFAULT_FS_INFO_INTERVAL_MS,
    connectionTimeouts: DEFAULT_CONNECTION_TIMEOUTS,
    logLevel: "info",
    backends: WELL_KNOWN_STORES.filter((s) => exists(s.path)).map((s) => ({
      type: s.type,
      name: s.name,
      timeoutMs: DEFAULT_BACKEND_TIMEOUT_MS,
      options: { path: s.path },
    })),
  };
}
