// Accepting client connections. imagelet accepts them itself (rather than
// letting grpc-js bind the path) so that each one can be normalized before
// the gRPC server reads it (normalized-connection.ts), and so that a socket
// handed over by systemd (socket activation) is served the same way.
import { chmodSync, fstatSync, readFileSync, readlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "../backend/contract";

export interface Listener {
  /** Stops accepting; connections already accepted go on. */
  close(): void;
}

/** sd_listen_fds(3): the first passed descriptor is always 3. */
const SD_LISTEN_FDS_START = 3;

function listen(server: Server, target: string | { fd: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    const done = () => {
      server.off("error", reject);
      resolve();
    };
    if (typeof target === "string") server.listen(target, done);
    else server.listen(target, done);
  });
}

/** Listens on a unix socket path created 0660 from the first instant (the umask covers the window before chmod). */
export async function listenOnPath(path: string, onConnection: (socket: Socket) => void): Promise<Listener> {
  const server = createServer({ allowHalfOpen: false }, onConnection);
  const previousUmask = process.umask(0o117);
  try {
    await listen(server, path);
  } finally {
    process.umask(previousUmask);
  }
  chmodSync(path, 0o660);
  return { close: () => void server.close() };
}

/**
 * The listening socket systemd passed (socket activation), following
 * sd_listen_fds(3): LISTEN_PID must be this process (the variables are not
 * meant for a child that inherited them) and LISTEN_FDS counts descriptors
 * from 3. Only the first is served: imagelet has one socket. The variables
 * are removed so that processes imagelet starts (exec plugins) do not take
 * them as theirs. Undefined when the process was not socket-activated.
 */
export function inheritedSocketFd(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const pid = env.LISTEN_PID;
  const count = Number(env.LISTEN_FDS ?? "0");
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pid === undefined || Number(pid) !== process.pid || !Number.isInteger(count) || count < 1) return undefined;
  return SD_LISTEN_FDS_START;
}

/**
 * The path a unix socket descriptor is bound to, from /proc/net/unix (Node
 * has no getsockname for an inherited descriptor), for the log. Abstract
 * names keep /proc's leading "@"; undefined when not found.
 */
export function unixSocketPath(fd: number): string | undefined {
  const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
  if (inode === undefined) return undefined;
  for (const line of readFileSync("/proc/net/unix", "utf8").split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const fields = line.trim().split(/\s+/);
    if (fields[6] === inode && fields[7] !== undefined) return fields[7];
  }
  return undefined;
}

export interface InheritedListener extends Listener {
  /** Where the inherited socket is bound, for the log. */
  path: string | undefined;
}

/** Accepts on a listening socket inherited from systemd; its path, mode and lifetime are systemd's. */
export async function listenOnInheritedFd(fd: number, onConnection: (socket: Socket) => void): Promise<InheritedListener> {
  let isSocket = false;
  try {
    isSocket = fstatSync(fd).isSocket();
  } catch {
    // not open
  }
  if (!isSocket) throw new Error(`LISTEN_FDS is set but descriptor ${fd} is not a socket`);
  const server = createServer({ allowHalfOpen: false }, onConnection);
  await listen(server, { fd });
  const path = unixSocketPath(fd);
  return { path, close: () => void server.close() };
}

/** The client's preface and the header of its first frame (SETTINGS): the handshake is under way. */
const HANDSHAKE_BYTES = 24 + 9;
/** A connection whose writing side has ended (GOAWAY sent, or given up) gets this long to flush, then is closed. */
export const FLUSH_GRACE_MS = 5000;
/** GOAWAY, last stream 0, NO_ERROR: "no call was taken; reconnect for the next one". */
const GOAWAY_BEFORE_ANY_CALL = Buffer.from([0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

export interface ConnectionLimits {
  /** The client's preface and first frame must arrive within this. */
  handshakeMs: number;
  /** A connection that has made no call within this gets GOAWAY (after its first call, the gRPC server's idle timeout rules). */
  firstRequestMs: number;
  /** A write the client has not taken within this closes the connection. */
  stalledWriteMs: number;
}

interface Watched {
  acceptedAt: number;
  handedOver: boolean;
  /** Since when bytes have waited to be written without the socket draining. */
  stalledSince?: number;
  endedAt?: number;
}

/**
 * Lets go of connections that do nothing useful, on one timer for all of
 * them: the HTTP/2 session would wait for a preface, for a first call, and
 * for a client that stopped reading, forever (and under Bun, a session that
 * gives up on a client only ends its socket, which waits for that client to
 * read). Rules, in docs/reliability.md: no handshake within handshakeMs; no
 * first call within firstRequestMs (GOAWAY); a write not taken within
 * stalledWriteMs; a connection whose writing side ended, after FLUSH_GRACE_MS.
 */
export class ConnectionWatch {
  private readonly watched = new Map<Socket, Watched>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly tickMs: number;

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
  ) {
    this.tickMs = Math.max(50, Math.min(1000, limits.handshakeMs / 4, limits.stalledWriteMs / 4));
  }

  /** Watches a new connection; call handedOver() when the gRPC server has it (its first call came). */
  add(socket: Socket): { handedOver(): void } {
    const w: Watched = { acceptedAt: Date.now(), handedOver: false };
    this.watched.set(socket, w);
    // Progress is a drain: Bun counts a write as written (bytesWritten) and
    // pending (writableLength) until the client has taken all of it.
    socket.on("drain", () => (w.stalledSince = undefined));
    socket.once("close", () => {
      this.watched.delete(socket);
      if (this.watched.size === 0) this.stop();
    });
    this.timer ??= setInterval(() => this.check(), this.tickMs).unref();
    return { handedOver: () => (w.handedOver = true) };
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    const now = Date.now();
    for (const [socket, w] of this.watched) {
      if (socket.destroyed) continue;
      if (socket.bytesRead < HANDSHAKE_BYTES && now - w.acceptedAt > this.limits.handshakeMs) {
        this.close(socket, "no HTTP/2 preface", this.limits.handshakeMs);
        continue;
      }
      if (!w.handedOver && !socket.writableEnded && now - w.acceptedAt > this.limits.firstRequestMs) {
        this.log.debug("closing client connection", { reason: "no call", afterMs: this.limits.firstRequestMs });
        socket.end(GOAWAY_BEFORE_ANY_CALL);
      }
      if (socket.writableLength > 0) {
        w.stalledSince ??= now;
        if (now - w.stalledSince > this.limits.stalledWriteMs) {
          this.close(socket, "the client stopped reading", this.limits.stalledWriteMs);
          continue;
        }
      } else w.stalledSince = undefined;
      if (socket.writableEnded) {
        w.endedAt ??= now;
        if (now - w.endedAt > FLUSH_GRACE_MS) this.close(socket, "closed, not read to the end", FLUSH_GRACE_MS);
      }
    }
  }

  /** Debug, not warn: a port probe or a health check that only connects does this too. */
  private close(socket: Socket, reason: string, afterMs: number): void {
    this.log.debug("closing client connection", { reason, afterMs });
    socket.destroy();
  }
}
