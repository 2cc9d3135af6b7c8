// Turns configuration into a running registry: each [[backend]] entry is
// created from its definition. The server and the in-process CLI both start
// here, so they see the same backends in the same order.
import { arch, platform as osPlatform } from "node:os";
import {
  OptionError,
  type Backend,
  type BackendDefinition,
  type Logger,
  type Platform,
} from "../backend/contract";
import { ConfigError, type ImageletConfig } from "../config/config";
import { BackendRegistry, errorText, type RegisteredBackend } from "./registry";

/** The host platform in OCI terms (GOOS/GOARCH names). */
export function hostPlatform(): Platform {
  const architecture = ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[arch()] ?? arch();
  return { os: osPlatform() === "win32" ? "windows" : osPlatform(), architecture, variant: architecture === "arm" ? "v7" : undefined };
}

/** Tags a logger's lines with the backend they concern. */
function backendLogger(log: Logger, backend: string): Logger {
  const tag = (f?: Record<string, unknown>) => ({ backend, ...f });
  return {
    debug: (m, f) => log.debug(m, tag(f)),
    info: (m, f) => log.info(m, tag(f)),
    warn: (m, f) => log.warn(m, tag(f)),
    error: (m, f) => log.error(m, tag(f)),
  };
}

/** A stand-in for a backend whose create() failed: it shows as failing, with the reason. */
function failedBackend(reason: string): Backend {
  return {
    list() {
      throw new Error(`could not be created: ${reason}`);
    },
  };
}

export async function buildRegistry(
  config: ImageletConfig,
  definitions: readonly BackendDefinition[],
  log: Logger,
  opts: { watch: boolean },
): Promise<BackendRegistry> {
  const platform = hostPlatform();
  const registered: RegisteredBackend[] = [];
  for (const [i, entry] of config.backends.entries()) {
    const definition = definitions.find((d) => d.name === entry.type);
    if (!definition) throw new ConfigError(config.file ?? "(defaults)", `backend[${i}].type`, `unknown backend type ${entry.type}`);
    let backend: Backend;
    let notice: string | undefined;
    try {
      backend = await definition.create(entry.options as never, {
        name: entry.name,
        log: backendLogger(log, entry.name),
        baseDir: config.baseDir,
        platform,
        setNotice: (text) => {
          if (text !== undefined && text !== notice) log.warn(text, { backend: entry.name });
          notice = text;
        },
      });
    } catch (e) {
      if (e instanceof OptionError) throw new ConfigError(config.file ?? "(defaults)", `backend[${i}].${e.key}`, e.message);
      log.error("backend could not be created", { backend: entry.name, error: errorText(e) });
      backend = failedBackend(errorText(e));
    }
    registered.push({ name: entry.name, type: entry.type, backend, timeoutMs: entry.timeoutMs, notice: () => notice });
  }
  const registry = new BackendRegistry(registered, {
    log,
    pollIntervalMs: opts.watch ? config.pollIntervalMs : 0,
    fsIntervalMs: config.fsInfoIntervalMs,
  });
  await registry.loadAll();
  if (opts.watch) registry.startWatching();
  return registry;
}
