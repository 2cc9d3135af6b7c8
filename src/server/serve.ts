// `imagelet serve`: the unix socket's lifecycle around the gRPC server (the
// process around it, and the registry mirror's port, are lifecycle.ts's). The
// socket is owned carefully because kubelet reconnects to a path, not a
// process: a live socket is never taken over, a stale one is removed, and a
// clean stop leaves nothing behind.
import { chownSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { dirname } from "node:path";
import type { BackendDefinition, Logger } from "../backend/contract";
import type { ImageletConfig } from "../config/config";
import type { RefusedPlugin } from "../plugins/load";
import { buildRegistry } from "../registry/build";
import { ServedRegistry } from "../registry/served";
import { errorMapping } from "./errors";
import { createInjectableGrpcServer } from "./grpc-server";
import { ConnectionWatch, inheritedSocketFd, listenOnInheritedFd, listenOnPath } from "./listener";
import { handOverConnection } from "./first-request";
import { ServingProcess } from "./lifecycle";
import { startMirrorListener } from "./mirror-listener";
import { servedServices } from "./services";

/** Server-side receive limit: CRI requests are tiny, so anything bigger is refused early. */
export const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

/**
 * SETTINGS_MAX_CONCURRENT_STREAMS, advertised to every client and enforced
 * (a stream beyond it is refused with REFUSED_STREAM, which a client may
 * retry). kubelet runs a few dozen calls at once at most, and a gRPC client
 * that reaches the limit queues its next call instead of failing it; 256 is
 * Go's net/http2 default (250) rounded up, and over twice RFC 9113's advice
 * not to go below 100. It bounds what one connection can make the server
 * hold: docs/reliability.md ("HTTP/2 abuse") has the memory figures.
 */
export const MAX_CONCURRENT_STREAMS = 256;

/** The socket path cannot be served safely (in use, not a socket, a directory others may write). */
export class SocketPathError extends Error {}

/** Resolves true when something accepts connections on the socket path. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Makes the socket path free to bind, or throws if a live server owns it. */
async function claimSocketPath(path: string, log: Logger): Promise<void> {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Whoever may write the directory may put their own socket where kubelet
  // connects (before imagelet starts, or between two runs), sticky bit or not.
  const dirMode = statSync(dir).mode;
  if (dirMode & 0o002) {
    throw new SocketPathError(`${dir} is writable by everyone (mode ${(dirMode & 0o7777).toString(8)}); put the socket in a directory only root or imagelet's user may write, such as /run/imagelet`);
  }
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new SocketPathError(`${path} exists and is not a socket; refusing to replace it`);
  if (await isListening(path)) throw new SocketPathError(`another process is listening on ${path}`);
  log.info("removing stale socket", { socket: path });
  unlinkSync(path);
}

function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  const text = readFileSync("/etc/group", "utf8");
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw new Error(`socket_group ${JSON.stringify(group)} is not a group on this system`);
}

export interface ServeHooks {
  /** Runs on SIGHUP (the reload), with the registry the handlers read. */
  onHangup?: (served: ServedRegistry) => void;
  /** The plugins refused now, for imagelet.v1.Diagnostics. */
  refusedPlugins?: () => readonly RefusedPlugin[];
}

export async function serve(
  config: ImageletConfig,
  definitions: readonly BackendDefinition[],
  log: Logger,
  hooks: ServeHooks = {},
): Promise<never> {
  const socket = config.socket;
  // Socket activation: systemd made the socket (path, mode, group) and keeps
  // it across restarts, so imagelet neither claims nor removes it.
  const inheritedFd = inheritedSocketFd();
  const ownsSocket = inheritedFd === undefined;
  if (ownsSocket) await claimSocketPath(socket, log);

  const registry = new ServedRegistry(await buildRegistry(config, definitions, log, { watch: true }));
  const serving = new ServingProcess(registry, log, hooks.onHangup);
  if (config.mirror) {
    try {
      serving.add(await startMirrorListener(config.mirror, registry, log));
    } catch (e) {
      await registry.close();
      throw e;
    }
  }
  const timeouts = config.connectionTimeouts;
  const server = createInjectableGrpcServer(
    {
      "grpc.max_receive_message_length": MAX_RECEIVE_BYTES,
      "grpc.max_send_message_length": -1,
      "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
      // channelz (grpc-js's per-call statistics for its admin service) is not served: it is pure per-call cost.
      "grpc.enable_channelz": 0,
      "grpc.max_connection_idle_ms": timeouts.idleMs,
      // A client that stopped reading leaves the ping unanswered (it sits
      // behind the answer it does not read): the connection is closed and
      // what was queued for it is freed.
      "grpc.keepalive_time_ms": timeouts.keepaliveMs,
      "grpc.keepalive_timeout_ms": timeouts.keepaliveTimeoutMs,
    },
    errorMapping(log),
    servedServices(registry, log, hooks.refusedPlugins),
    // A request left half sent is a client not answering, as an unanswered ping is.
    { stalledRequestMs: timeouts.keepaliveTimeoutMs },
    log,
  );
  // Clients that send the socket path as `:authority` (kubelet, crictl before
  // v1.30) are served too: their connections go through the rewriter.
  const connections = new Set<Socket>();
  const watch = new ConnectionWatch(
    { handshakeMs: timeouts.handshakeMs, firstRequestMs: timeouts.idleMs, stalledWriteMs: timeouts.keepaliveTimeoutMs },
    log,
  );
  const accept = (connection: Socket) => {
    connections.add(connection);
    connection.once("close", () => connections.delete(connection));
    const watched = watch.add(connection);
    handOverConnection(connection, log, (c) => {
      watched.handedOver();
      server.inject(c);
    });
  };
  const listener = ownsSocket ? await listenOnPath(socket, accept) : await listenOnInheritedFd(inheritedFd, accept);
  const servedOn = ownsSocket ? socket : `${"path" in listener ? listener.path : "?"} (fd ${inheritedFd}, systemd socket activation)`;
  if (ownsSocket && config.socketGroup !== undefined) chownSync(socket, process.getuid?.() ?? 0, groupId(config.socketGroup));

  const health = registry.health();
  log.info("serving CRI ImageService runtime.v1", {
    socket: servedOn,
    config: config.file ?? "none (well-known stores)",
    backends: health.map((h) => `${h.name}(${h.type}):${h.state}:${h.images}`).join(",") || "none",
    images: registry.view.size,
  });

  serving.add({
    name: "CRI socket",
    async stop() {
      // Unlinking first makes new clients fail fast instead of queueing on a
      // closing server. An inherited socket stays: systemd queues new clients
      // on it until the next start.
      if (ownsSocket) removeSocket(socket);
      listener.close();
      watch.stop();
      await server.shutdown();
      await connectionsClosed(connections, SHUTDOWN_FLUSH_MS);
    },
    stopNow() {
      server.forceShutdown();
      if (ownsSocket) removeSocket(socket);
    },
  });
  return serving.run();
}

/** How long a stopping server waits for the last answers to reach clients that read slowly. */
const SHUTDOWN_FLUSH_MS = 5000;

/**
 * Resolves when every client connection is closed, or `graceMs` passed (then
 * ends the rest). The gRPC server's graceful close returns once no call
 * runs, which can be before the last answer's bytes have been written; the
 * HTTP/2 session closes its connection itself after that, so exiting must wait
 * for the connections, not for the server.
 */
async function connectionsClosed(connections: Set<Socket>, graceMs: number): Promise<void> {
  const closed = [...connections].map((c) => (c.destroyed ? undefined : new Promise<void>((resolve) => c.once("close", () => resolve()))));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
  if (await Promise.race([Promise.all(closed).then(() => false), timedOut])) for (const c of connections) c.end();
  clearTimeout(timer);
}

function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
