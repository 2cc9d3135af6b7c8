// One accepted client connection as the gRPC server sees it: the socket's
// bytes, with the client's header blocks made acceptable (h2-authority.ts) on
// the way in, and the server's bytes written to the socket unchanged.
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import type { Logger } from "../backend/contract";
import { ClientHeaderRewriter, H2StreamError } from "./h2-authority";

/** How long a closed connection may take to flush what is queued for a client that does not read. */
const FLUSH_GRACE_MS = 5000;

export class NormalizedConnection extends Duplex {
  private readonly rewriter: ClientHeaderRewriter;

  /**
   * `rewriter` and `initial`: a rewriter that already followed the first
   * bytes of this connection (first-request.ts), and what it made of them.
   */
  constructor(
    private readonly socket: Socket,
    private readonly log: Logger,
    rewriter = new ClientHeaderRewriter(() => {}),
    initial: Buffer[] = [],
  ) {
    super({ allowHalfOpen: false });
    for (const bytes of initial) this.push(bytes);
    // Backpressure: a full read buffer pauses the socket until the server reads again.
    this.rewriter = rewriter;
    rewriter.forward = (bytes) => {
      if (!this.push(bytes)) socket.pause();
    };
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.push(null));
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => this.destroy());
  }

  private onData(chunk: Buffer): void {
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

  private send(data: Buffer, callback: (error?: Error | null) => void): void {
    if (this.socket.write(data)) callback();
    else this.socket.once("drain", () => callback());
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk, callback);
  }

  /** What the session queued while a write was pending leaves in one socket write. */
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.send(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
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
