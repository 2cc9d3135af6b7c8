// One accepted client connection as the gRPC server sees it: the socket's
// bytes, with the client's header blocks made acceptable (h2-authority.ts) on
// the way in, and the server's bytes written to the socket unchanged.
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import type { Logger } from "../backend/contract";
import { ClientHeaderRewriter, goawayFrame, H2_ERROR, H2StreamError } from "./h2-authority";

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
    this.rewriter = rewriter;
    // What the rewriter hands on from one read (pass-through ranges and
    // rewritten blocks, one pair per call) goes to the HTTP/2 session in one
    // piece: Bun's session costs more per piece the more streams are open.
    rewriter.forward = (bytes) => this.forwarded.push(bytes);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.push(null));
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => this.destroy());
  }

  private forwarded: Buffer[] = [];

  private onData(chunk: Buffer): void {
    try {
      this.rewriter.feed(chunk);
    } catch (e) {
      // One client's bytes never take the service down: whatever the rewriter
      // cannot follow (or a fault of its own) closes this connection only,
      // with a GOAWAY that says why (the blocks before the bad one are served).
      this.forwarded = [];
      const code = e instanceof H2StreamError ? e.code : H2_ERROR.INTERNAL_ERROR;
      if (e instanceof H2StreamError) this.log.warn("closing client connection", { reason: e.message });
      else this.log.error("closing client connection after an internal error", { error: e instanceof Error ? e.message : String(e) });
      this.queued.push(goawayFrame(this.rewriter.lastStreamId, code));
      this.destroy();
      return;
    }
    const pieces = this.forwarded;
    if (pieces.length === 0) return;
    this.forwarded = [];
    // Backpressure: a full read buffer pauses the socket until the server reads again.
    if (!this.push(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces))) this.socket.pause();
  }

  override _read(): void {
    this.socket.resume();
  }

  /**
   * The HTTP/2 session writes each frame on its own (a response is HEADERS,
   * DATA and trailers), and each socket write is a system call. Frames written
   * in one turn of the event loop are queued and leave in one socket write;
   * the session may go on writing until the socket itself pushes back.
   */
  private queued: Buffer[] = [];
  private blocked?: (() => void)[];

  private queue(chunk: Buffer, callback: (error?: Error | null) => void): void {
    this.queued.push(chunk);
    if (this.queued.length === 1) setImmediate(this.flush);
    if (this.blocked) this.blocked.push(() => callback());
    else callback();
  }

  private readonly flush = (): void => {
    const chunks = this.queued;
    if (chunks.length === 0 || this.socket.destroyed) return;
    this.queued = [];
    if (this.socket.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))) return;
    this.blocked ??= [];
    this.socket.once("drain", () => {
      const waiting = this.blocked ?? [];
      this.blocked = undefined;
      for (const resume of waiting) resume();
    });
  };

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.queue(chunk, callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.queue(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.flush();
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The HTTP/2 session destroys its stream when it closes, with the last
    // response (and its GOAWAY) possibly still queued on the socket: end the
    // socket, which flushes first, unless this is a failure.
    if (error || this.socket.destroyed) this.socket.destroy();
    else {
      this.flush();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), FLUSH_GRACE_MS).unref();
    }
    callback(error);
  }
}
