// MirrorServer: the registry mirror's TCP listener (Bun.serve), started only
// when the config has a [mirror] table (src/server/mirror-listener.ts loads
// this folder then, and never otherwise).
import type { Server } from "bun";
import type { Logger } from "../backend/contract";
import { formatListenAddress, isLoopback, type ListenAddress } from "../config/listen";
import type { ServedRegistry } from "../registry/served";
import { DistributionRoutes } from "./distribution";
import { errorResponse, MirrorError } from "./errors";

/** Requests are GET and HEAD: a body is never read, so a large one is refused early. */
const MAX_REQUEST_BODY_BYTES = 64 * 1024;

export class MirrorServer {
  private constructor(
    private readonly server: Server<undefined>,
    /** HOST:PORT as bound (the port the system chose, for port 0). */
    readonly address: string,
  ) {}

  /** Binds `listen` and serves `served`'s view; throws when the address cannot be bound. */
  static start(listen: ListenAddress, served: ServedRegistry, log: Logger): MirrorServer {
    const routes = new DistributionRoutes(served, log);
    const server = Bun.serve({
      hostname: listen.host,
      port: listen.port,
      maxRequestBodySize: MAX_REQUEST_BODY_BYTES,
      fetch: (request) => routes.answer(request),
      // Only reached by a failure outside the handlers (they never throw).
      error: (e) => {
        log.error("mirror: request failed", { error: e.message });
        return errorResponse(new MirrorError("NOT_FOUND", "internal error; imagelet's log has it"), "GET");
      },
    });
    const address = formatListenAddress({ host: listen.host, port: server.port ?? listen.port });
    if (!isLoopback(listen.host)) {
      log.warn("the registry mirror listens beyond this machine: anyone who can reach this address can read every image imagelet serves, without authentication", { listen: address });
    }
    return new MirrorServer(server, address);
  }

  /** Stops accepting; downloads in flight get `graceMs` to finish, then are cut. */
  async stop(graceMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cut = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([this.server.stop(false), cut]);
    clearTimeout(timer);
    await this.server.stop(true);
  }

  stopNow(): void {
    void this.server.stop(true);
  }
}
