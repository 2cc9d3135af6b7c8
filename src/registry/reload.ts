// SIGHUP: re-read the config file and the plugin directory, build a new
// registry beside the running one, let it list every store, then swap it in
// (served.ts). Connections are untouched and calls in flight finish on the
// registry they started on. A config that does not parse or validate changes
// nothing: the running configuration stays, and the log says why.
import type { Logger } from "../backend/contract";
import type { ImageletConfig } from "../config/config";
import { formatListenAddress } from "../config/listen";
import type { LoadedPlugin, RefusedPlugin } from "../plugins/load";
import { buildRegistry } from "./build";
import { errorText } from "../model/error-text";
import type { ServedRegistry } from "./served";
import { loadSetup, type Setup, type SetupOptions } from "./setup";

/** Settings read once at start: changing them needs a restart. */
const RESTART_KEYS = [
  ["socket", "socket"],
  ["socketGroup", "socket_group"],
  ["logLevel", "log_level"],
] as const satisfies readonly (readonly [keyof ImageletConfig, string])[];

export class Reloader {
  private running?: Promise<void>;
  private again = false;

  constructor(
    private setup: Setup,
    /** The command line's settings; `socket` is its --socket, which wins over the file's. */
    private readonly options: SetupOptions & { socket?: string },
    private readonly log: Logger,
  ) {}

  /** The plugins loaded now (for attributing stray errors). */
  get plugins(): readonly LoadedPlugin[] {
    return this.setup.plugins.loaded;
  }

  /** The plugins refused by the last load, for `imagelet plugins --endpoint`. */
  get refusedPlugins(): readonly RefusedPlugin[] {
    return this.setup.plugins.refused;
  }

  get config(): ImageletConfig {
    return this.setup.config;
  }

  /** Reloads into `served`; a reload asked for while one runs runs once more after it. Never rejects. */
  reload(served: ServedRegistry): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.reloadOnce(served);
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async reloadOnce(served: ServedRegistry): Promise<void> {
    const log = this.log;
    log.info("reloading configuration and plugins", { config: this.setup.config.file ?? "none (well-known stores)" });
    let next: Setup;
    try {
      next = await loadSetup(this.options, log, this.setup.plugins.loaded);
    } catch (e) {
      log.error("reload failed; keeping the running configuration", { error: errorText(e) });
      return;
    }
    if (this.options.socket) next.config.socket = this.options.socket;
    const running = this.setup.config;
    for (const [field, key] of RESTART_KEYS) {
      if (next.config[field] !== running[field]) {
        log.warn("changed setting takes effect at the next start", { key, running: running[field], configured: next.config[field] });
      }
    }
    // The mirror's listener stays as started (its view follows the reload like the socket's).
    const mirror = (c: ImageletConfig) => (c.mirror ? formatListenAddress(c.mirror.listen) : "none");
    if (mirror(next.config) !== mirror(running)) {
      log.warn("changed setting takes effect at the next start", { key: "mirror.listen", running: mirror(running), configured: mirror(next.config) });
    }
    // What is in effect stays recorded, so the next reload compares against it.
    next.config = { ...next.config, socket: running.socket, socketGroup: running.socketGroup, logLevel: running.logLevel, mirror: running.mirror };
    let registry;
    try {
      registry = await buildRegistry(next.config, next.definitions, log, { watch: true, previous: served.registry });
    } catch (e) {
      log.error("reload failed; keeping the running configuration", { error: errorText(e) });
      return;
    }
    this.setup = next;
    const oldClosed = served.swap(registry);
    const health = registry.health();
    log.info("reloaded", {
      backends: health.map((h) => `${h.name}(${h.type}):${h.state}:${h.images}`).join(",") || "none",
      images: registry.view.size,
    });
    await oldClosed;
  }
}
