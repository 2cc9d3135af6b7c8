// Accepting client connections. imagelet accepts them itself (rather than
// letting grpc-js bind the path) so that each one can be normalized before
// the gRPC server reads it (normalized-connection.ts), and so that a socket
// handed over by systemd (socket activation) is served the same way.
import { chmodSync, fstatSync, readFileSync, readlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";

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
