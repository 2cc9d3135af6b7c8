// The serving process: one registry (swapped whole on SIGHUP), the listeners
// that read it (the CRI socket; the registry mirror's port when configured),
// and an ordered stop on SIGTERM/SIGINT: every listener stops accepting and
// finishes what is in flight, then the registry closes its backends, then
// the process exits. A second signal stops everything at once.
import type { Logger } from "../backend/contract";
import type { ServedRegistry } from "../registry/served";

/** Something that serves the registry to clients, started before runProcess and stopped by it. */
export interface Listener {
  /** For the log: "CRI socket", "registry mirror". */
  readonly name: string;
  /** Stops accepting; resolves when what was in flight has finished (each listener bounds the wait). */
  stop(): Promise<void>;
  /** The second signal: stop at once. */
  stopNow(): void;
}

/** A listener could not start (its address is taken, say): imagelet exits 1 with this message. */
export class ListenerStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ListenerStartError";
  }
}

/** Runs until a stop signal; never returns. */
export function runProcess(registry: ServedRegistry, listeners: readonly Listener[], log: Logger, onHangup?: (served: ServedRegistry) => void): Promise<never> {
  process.on("SIGHUP", () => onHangup?.(registry));
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("second signal; stopping now", { signal });
      for (const listener of listeners) listener.stopNow();
      process.exit(0);
    }
    stopping = true;
    log.info("stopping: finishing in-flight calls", { signal });
    await Promise.all(
      listeners.map((l) =>
        l.stop().catch((e: unknown) => log.warn("stopping a listener failed", { listener: l.name, error: e instanceof Error ? e.message : String(e) })),
      ),
    );
    await registry.close();
    log.info("stopped", { signal });
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  return new Promise<never>(() => {});
}
