// `imagelet serve`: the unix socket's lifecycle around the gRPC server. The
// socket is owned carefully because kubelet reconnects to a path, not a
// process: a live socket is never taken over, a stale one is removed, and a
// clean stop leaves nothing behind.
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname } from "node:path";
import { createServer } from "nice-grpc";
import type { BackendDefinition, Logger } from "../backend/contract";
import type { ImageletConfig } from "../config/config";
import { buildRegistry } from "../registry/build";
import { errorMapping } from "./errors";
import { servedServices } from "./services";

/** Server-side receive limit: CRI requests are tiny, so anything bigger is refused early. */
export const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

export class SocketInUseError extends Error {}

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
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new SocketInUseError(`${path} exists and is not a socket; refusing to replace it`);
  if (await isListening(path)) throw new SocketInUseError(`another process is listening on ${path}`);
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

export async function serve(config: ImageletConfig, definitions: readonly BackendDefinition[], log: Logger): Promise<never> {
  const socket = config.socket;
  await claimSocketPath(socket, log);

  const registry = await buildRegistry(config, definitions, log, { watch: true });
  const server = createServer({
    "grpc.max_receive_message_length": MAX_RECEIVE_BYTES,
    "grpc.max_send_message_length": -1,
  }).use(errorMapping(log));
  for (const { definition, implementation } of servedServices(registry, log)) server.add(definition, implementation as never);

  // Created 0660 from the first instant: the umask covers the window before chmod.
  const previousUmask = process.umask(0o117);
  try {
    await server.listen(`unix:${socket}`);
  } finally {
    process.umask(previousUmask);
  }
  chmodSync(socket, 0o660);
  if (config.socketGroup !== undefined) chownSync(socket, process.getuid?.() ?? 0, groupId(config.socketGroup));

  const health = registry.health();
  log.info("serving CRI ImageService runtime.v1", {
    socket,
    config: config.file ?? "none (well-known stores)",
    backends: health.map((h) => `${h.name}(${h.type}):${h.state}:${h.images}`).join(",") || "none",
    images: registry.view.size,
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("second signal; stopping now", { signal });
      server.forceShutdown();
      removeSocket(socket);
      process.exit(0);
    }
    stopping = true;
    log.info("stopping: finishing in-flight calls", { signal });
    // Unlinking first makes new clients fail fast instead of queueing on a closing server.
    removeSocket(socket);
    await server.shutdown();
    await registry.close();
    log.info("stopped", { signal });
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  return new Promise<never>(() => {});
}

function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
