// One accepted client connection as the gRPC server sees it: the socket's
// bytes, with the client's header blocks made acceptable (h2-authority.ts) on
// the way in, and the server's bytes written to the socket unchanged. It is
// also where a connection that does nothing useful is let go
// (docs/reliability.md): the HTTP/2 session would wait for a preface, and
// for a client that does not read, forever.
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import type { Logger } from "../backend/contract";
import { ClientHeaderRewriter, H2StreamError } from "./h2-authority";

/** How long a closed connection may take to flush what is queued for a client that does not read. */
const FLUSH_GRACE_MS = 5000;

/** The client's preface and the header of its first frame (SETTINGS): the handshake is under way. */
const HANDSHAKE_BYTES = 24 + 9;

export interface ConnectionLimits {
  /** The handshake's first bytes must arrive within this. */
  handshakeMs: number;
  /** A write the client has not taken within this closes the connection. */
  stalledWriteMs: number;
}

export class NormalizedConnection extends Duplex {
  private readonly rewriter: ClientHeaderRewriter;
  private received = 0;
  private handshakeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly log: Logger,
    private readonly limits: ConnectionLimits,
  ) {
    super({ allowHalfOpen: false });
    this.handshakeTimer = setTimeout(() => this.giveUp("no HTTP/2 preface", limits.handshakeMs), limits.handshakeMs).unref();
    // Backpressure: a full read buffer pauses the socket until the server reads again.
    this.rewriter = new ClientHeaderRewriter((bytes) => {
      if (!this.push(bytes)) socket.pause();
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.push(null));
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => this.destroy());
  }

  /** Closes a connection that broke no rule of HTTP/2 but took too long; debug, since a port probe does this too. */
  private giveUp(reason: string, afterMs: number): void {
    this.log.debug("closing client connection", { reason, afterMs });
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.handshakeTimer && (this.received += chunk.length) >= HANDSHAKE_BYTES) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = undefined;
    }
    try {
      this.rewriter.feed(chunk);
    } catch (e) {
      // One client's bytes never take the service down: whatever the rewriter
      // cannot follow (or a fault of its own) closes this connection only.
      if (e instanceof H2StreamError) this.log.warn("closing client connection", { reason: e.message });
      else this.log.error("closing client connection after an internal error", { error: e instanceof Error ? e.message : String(e) });
      this.destroy();
    }
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) return callback();
    // A client that stopped reading: its socket fills, and the session would
    // keep what it still has to send, and the connection, forever.
    const stalled = setTimeout(() => this.giveUp("the client stopped reading", this.limits.stalledWriteMs), this.limits.stalledWriteMs).unref();
    this.socket.once("drain", () => {
      clearTimeout(stalled);
      callback();
    });
  }

  override _final(callback: (error?: Error | null) => void): void {
    // The session is done with this connection (its GOAWAY is the last thing
    // written): the client gets FLUSH_GRACE_MS to take what is queued, then
    // the connection is closed whether it read or not.
    setTimeout(() => this.socket.destroy(), FLUSH_GRACE_MS).unref();
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.handshakeTimer);
    // The HTTP/2 session destroys its stream when it closes, with the last
    // response (and its GOAWAY) possibly still queued on the socket: end the
    // socket, which flushes first, unless this is a failure.
    if (error || this.socket.destroyed) this.socket.destroy();
    else {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), FLUSH_GRACE_MS).unref();
    }
    callback(error);
  }
}
