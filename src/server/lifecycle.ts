// The serving process: one registry (swapped whole on SIGHUP), the listeners
// that read it (the CRI socket; the registry mirror's port when configured),
// and an ordered stop on SIGTERM/SIGINT: every listener stops accepting and
// finishes what is in flight, then the registry closes its backends, then
// the process exits. A second signal stops everything at once.
import type { Logger } from "../backend/contract";
import { errorText } from "../model/error-text";
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

/**
 * The process from the registry's start: signals are handled from the
 * moment it exists (a reload or a stop during start-up included), and a stop
 * stops the listeners started so far.
 */
export class ServingProcess {
  private readonly listeners: Listener[] = [];
  private stopping = false;

  constructor(
    private readonly registry: ServedRegistry,
    private readonly log: Logger,
    onHangup?: (served: ServedRegistry) => void,
  ) {
    process.on("SIGHUP", () => onHangup?.(registry));
    process.on("SIGTERM", () => void this.stop("SIGTERM"));
    process.on("SIGINT", () => void this.stop("SIGINT"));
  }

  /** A listener that has started: stopped with the process. */
  add(listener: Listener): void {
    this.listeners.push(listener);
  }

  /** Serves until a stop signal; never returns. */
  run(): Promise<never> {
    return new Promise<never>(() => {});
  }

  private async stop(signal: string): Promise<void> {
    const log = this.log;
    if (this.stopping) {
      log.warn("second signal; stopping now", { signal });
      for (const listener of this.listeners) listener.stopNow();
      process.exit(0);
    }
    this.stopping = true;
    log.info("stopping: finishing in-flight calls", { signal });
    await Promise.all(
      this.listeners.map((l) =>
        l.stop().catch((e: unknown) => log.warn("stopping a listener failed", { listener: l.name, error: errorText(e) })),
      ),
    );
    await this.registry.close();
    log.info("stopped", { signal });
    process.exit(0);
  }
}
