// Turns configuration into a running registry: each [[backend]] entry is
// created from its definition. The server and the in-process CLI both start
// here, so they see the same backends in the same order.
import { arch, platform as osPlatform } from "node:os";
import type { Backend, BackendContext, BackendDefinition, Logger, Platform } from "../backend/contract";
import { ConfigError, type ImageletConfig } from "../config/config";
import { PinnedImages } from "../model/pinned";
import { errorText } from "../model/error-text";
import { BackendRegistry, type RegisteredBackend } from "./registry";
import { RUNTIME_BACKEND } from "../runtime/backend";
import type { MirrorWitness } from "../runtime/mirror-witness";

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

/** A stand-in for a backend that could not be created: it shows as failing, with the reason. */
function failedBackend(reason: string): Backend {
  return {
    list() {
      throw new Error(reason);
    },
  };
}

/**
 * The key of an OptionError, from the SDK or from a plugin's vendored copy of
 * it (another class, so instanceof cannot tell).
 */
function optionErrorKey(e: unknown): string | undefined {
  const key = (e as { key?: unknown } | undefined)?.key;
  return e instanceof Error && e.name === "OptionError" && typeof key === "string" ? key : undefined;
}

/**
 * Runs a definition's create() under the backend's timeout: a plugin whose
 * create() never settles must not hold up the start. A backend that arrives
 * after the timeout is closed, so its watches do not leak.
 */
function createWithin(definition: BackendDefinition, options: Record<string, unknown>, ctx: BackendContext, timeoutMs: number, log: Logger): Promise<Backend> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new Error(`create() timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    let created: Backend | Promise<Backend>;
    try {
      created = definition.create(options as never, ctx);
    } catch (e) {
      clearTimeout(timer);
      return reject(e);
    }
    Promise.resolve(created).then(
      (backend) => {
        clearTimeout(timer);
        if (!late) return resolve(backend);
        Promise.resolve(backend?.close?.()).catch((e) => log.warn("backend close failed", { backend: ctx.name, error: errorText(e) }));
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** A created backend must at least list; anything else is a plugin bug reported as its failure. */
function checkBackend(backend: unknown): Backend {
  if (typeof backend !== "object" || backend === null || typeof (backend as Backend).list !== "function") {
    throw new Error("create() did not return a backend (an object with a list() function)");
  }
  return backend as Backend;
}

export async function buildRegistry(
  config: ImageletConfig,
  definitions: readonly BackendDefinition[],
  log: Logger,
  opts: { watch: boolean; previous?: BackendRegistry; mirrorWitness?: MirrorWitness },
): Promise<BackendRegistry> {
  const platform = hostPlatform();
  const registered: RegisteredBackend[] = [];
  // Backends created before a configuration error must not outlive it (their watches).
  const abandon = async (error: ConfigError): Promise<never> => {
    await Promise.allSettled(registered.map(async (r) => r.backend.close?.()));
    throw error;
  };
  for (const [i, entry] of config.backends.entries()) {
    if (entry.unavailable !== undefined) {
      log.error("backend cannot be created: its plugin was refused", { backend: entry.name, type: entry.type, reason: entry.unavailable });
      const reason = `plugin for type ${JSON.stringify(entry.type)} refused: ${entry.unavailable}`;
      registered.push({ name: entry.name, type: entry.type, backend: failedBackend(reason), timeoutMs: entry.timeoutMs });
      continue;
    }
    const definition = definitions.find((d) => d.name === entry.type);
    if (!definition) return abandon(new ConfigError(config.file ?? "(defaults)", `backend[${i}].type`, `unknown backend type ${entry.type}`));
    let backend: Backend;
    let notice: string | undefined;
    const ctx: BackendContext = {
      name: entry.name,
      log: backendLogger(log, entry.name),
      baseDir: config.baseDir,
      platform,
      setNotice: (text) => {
        if (text !== undefined && text !== notice) log.warn(text, { backend: entry.name });
        notice = text;
      },
    };
    try {
      backend = checkBackend(await createWithin(definition, entry.options, ctx, entry.timeoutMs, log));
    } catch (e) {
      const key = optionErrorKey(e);
      if (key !== undefined) return abandon(new ConfigError(config.file ?? "(defaults)", `backend[${i}].${key}`, (e as Error).message));
      log.error("backend could not be created", { backend: entry.name, error: errorText(e) });
      backend = failedBackend(`could not be created: ${errorText(e)}`);
    }
    const key = JSON.stringify([entry.type, entry.options]);
    registered.push({ name: entry.name, type: entry.type, backend, timeoutMs: entry.timeoutMs, notice: () => notice, key });
  }
  // Loaded only in front mode, like the mirror without [mirror].
  const front = config.runtime ? (await import("../runtime/front-mode")).frontMode(config.runtime, backendLogger(log, RUNTIME_BACKEND)) : undefined;
  if (front) registered.push(front.registered);
  const registry = new BackendRegistry(registered, {
    log,
    pollIntervalMs: opts.watch ? config.pollIntervalMs : 0,
    fsIntervalMs: config.fsInfoIntervalMs,
    pinned: new PinnedImages(config.pinnedImages ?? []),
    copies: front ? RUNTIME_BACKEND : undefined,
  });
  // A reload keeps the mirror of the start (its listener is not restarted), so its counts too.
  front?.attach(registry, opts.mirrorWitness ?? opts.previous?.front?.witness);
  if (opts.previous) registry.inherit(opts.previous);
  await registry.loadAll();
  if (opts.watch) registry.startWatching();
  return registry;
}

/**
 * Creates each configured backend and closes it again, without listing or
 * watching: `imagelet config --check` refuses an option value a backend's
 * create() refuses (OptionError) with the same ConfigError a start gives. A
 * create() that fails otherwise would start as a failing backend, not stop
 * imagelet, so it is returned as a warning.
 */
export async function checkBackends(config: ImageletConfig, definitions: readonly BackendDefinition[], log: Logger): Promise<string[]> {
  const platform = hostPlatform();
  const warnings: string[] = [];
  for (const [i, entry] of config.backends.entries()) {
    if (entry.unavailable !== undefined) {
      warnings.push(`backend ${entry.name}: plugin for type ${JSON.stringify(entry.type)} refused: ${entry.unavailable}`);
      continue;
    }
    const definition = definitions.find((d) => d.name === entry.type);
    if (!definition) throw new ConfigError(config.file ?? "(defaults)", `backend[${i}].type`, `unknown backend type ${entry.type}`);
    const ctx: BackendContext = { name: entry.name, log: backendLogger(log, entry.name), baseDir: config.baseDir, platform, setNotice: () => {} };
    try {
      const backend = checkBackend(await createWithin(definition, entry.options, ctx, entry.timeoutMs, log));
      await backend.close?.();
    } catch (e) {
      const key = optionErrorKey(e);
      if (key !== undefined) throw new ConfigError(config.file ?? "(defaults)", `backend[${i}].${key}`, (e as Error).message);
      warnings.push(`backend ${entry.name} could not be created: ${errorText(e)}`);
    }
  }
  return warnings;
}
