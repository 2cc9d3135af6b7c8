// Closes connections that hold calls open without progress
// (docs/reliability.md, "HTTP/2 abuse"). A stream counts against
// SETTINGS_MAX_CONCURRENT_STREAMS, and holds memory, until it closes; a client
// can open the limit's worth of streams and then stall each one, while it
// answers pings, which keeps the connection out of every other timeout (it is
// neither idle nor unresponsive):
//   - sending part of a request and no more: no real client leaves a request
//     half sent (gRPC clients send a unary request at once, and a streaming
//     one keeps sending or half-closes);
//   - never giving flow-control credit for the answer (a window of 0): the
//     answer waits in the stream for ever.
// One timer for all streams, as ConnectionWatch has for connections. A stream
// stalls when its request is incomplete and no DATA came, or when it has an
// answer to deliver (bytes buffered, or ended but not closed) and none of it
// left, for `stalledMs`; its connection then ends with GOAWAY
// ENHANCE_YOUR_CALM. A stream with nothing to deliver (a health Watch between
// changes) never stalls.
//
// The bytes of incomplete requests are what a client can make the server hold
// (grpc-js keeps a message until it is whole, up to the 4 MiB receive limit,
// on each stream). They are bounded per connection and for all connections
// together: a DATA frame that takes either over its bound ends its connection
// the same way at once.
import type { Http2Session, ServerHttp2Stream } from "node:http2";
import type { Logger } from "../backend/contract";
import { H2_ERROR } from "./h2-authority";

const END_STREAM = 0x1;

/** Incomplete-request bytes one connection may make the server hold: one request of the 4 MiB receive limit. */
export const MAX_PENDING_REQUEST_BYTES_PER_CONNECTION = 4 * 1024 * 1024;
/** The same, all connections together. */
export const MAX_PENDING_REQUEST_BYTES = 32 * 1024 * 1024;
/**
 * Streams open on all connections together (each is up to about 32 KiB of the
 * server's memory, with its gRPC call): 8 connections at
 * SETTINGS_MAX_CONCURRENT_STREAMS. A stream over it ends the connection that
 * holds the most, which is never a real client's (kubelet holds a few dozen
 * at most).
 */
export const MAX_OPEN_STREAMS = 2048;

interface Watched {
  /** The stream's connection (its HTTP/2 session). */
  session: Http2Session;
  /** Whether the client has sent all of its request. */
  requestDone: boolean;
  /** Bytes of the request received so far, counted in `pending` until the request is whole. */
  bytes: number;
  /** DATA frames received so far. */
  frames: number;
  /** What the last check saw (frames received, or the answer's buffered bytes), and since when it has not moved. */
  seen: number;
  since: number;
}

export class StreamWatch {
  private readonly watched = new Map<ServerHttp2Stream, Watched>();
  /** Incomplete-request bytes per connection, and all together. */
  private readonly pending = new Map<Http2Session, number>();
  private pendingTotal = 0;
  /** Open streams per connection. */
  private readonly open = new Map<Http2Session, number>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly tickMs: number;

  constructor(
    private readonly stalledMs: number,
    private readonly log: Logger,
  ) {
    this.tickMs = Math.max(50, Math.min(1000, stalledMs / 4));
  }

  /** For the HTTP/2 server's "stream" event, before the gRPC server's own listener. */
  readonly add = (stream: ServerHttp2Stream, _headers: unknown, flags: number): void => {
    const session = stream.session;
    if (session === undefined) return;
    const w: Watched = { session, requestDone: (flags & END_STREAM) !== 0, bytes: 0, frames: 0, seen: -1, since: Date.now() };
    this.watched.set(stream, w);
    this.open.set(session, (this.open.get(session) ?? 0) + 1);
    if (this.watched.size > MAX_OPEN_STREAMS) this.closeBusiest(this.watched.size);
    if (!w.requestDone) {
      // Bun hands each DATA frame's payload to push(): counting there needs no
      // "data" listener, which would take the reading out of grpc-js's hands.
      const push = stream.push;
      stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
        w.frames++;
        if (!w.requestDone && chunk instanceof Uint8Array && chunk.byteLength > 0) this.hold(w, chunk.byteLength);
        return push.call(stream, chunk, encoding);
      };
      stream.once("end", () => this.requestDone(w));
    }
    stream.once("close", () => {
      this.requestDone(w);
      this.watched.delete(stream);
      const open = (this.open.get(session) ?? 0) - 1;
      if (open <= 0) this.open.delete(session);
      else this.open.set(session, open);
    });
    this.timer ??= setInterval(() => this.check(), this.tickMs).unref();
  };

  private hold(w: Watched, n: number): void {
    w.bytes += n;
    const held = (this.pending.get(w.session) ?? 0) + n;
    this.pending.set(w.session, held);
    this.pendingTotal += n;
    if (held > MAX_PENDING_REQUEST_BYTES_PER_CONNECTION || this.pendingTotal > MAX_PENDING_REQUEST_BYTES) {
      this.close(w.session, "incomplete requests over their memory bound", held);
    }
  }

  /** The request is whole (or gone): its bytes are the gRPC server's now, and no longer counted. */
  private requestDone(w: Watched): void {
    w.requestDone = true;
    if (w.bytes === 0) return;
    this.pendingTotal -= w.bytes;
    const held = (this.pending.get(w.session) ?? 0) - w.bytes;
    if (held <= 0) this.pending.delete(w.session);
    else this.pending.set(w.session, held);
    w.bytes = 0;
  }

  /** Over MAX_OPEN_STREAMS: the connection with the most open streams goes. */
  private closeBusiest(total: number): void {
    let busiest: Http2Session | undefined;
    let most = 0;
    for (const [session, count] of this.open) {
      // A connection already ended still counts until its streams have closed.
      if (session.destroyed) total -= count;
      else if (count > most) {
        busiest = session;
        most = count;
      }
    }
    if (total > MAX_OPEN_STREAMS) this.close(busiest, "the most open streams while all connections hold too many", most);
  }

  /** Ends a connection with GOAWAY ENHANCE_YOUR_CALM. */
  private close(session: Http2Session | undefined, reason: string, detail: number): void {
    if (session === undefined || session.destroyed) return;
    this.log.debug("closing client connection", { reason, detail });
    // Not destroy(error, code): the session would emit "error", which nothing listens to.
    session.goaway(H2_ERROR.ENHANCE_YOUR_CALM);
    session.destroy();
    this.collectSoon();
  }

  private collecting: ReturnType<typeof setTimeout> | undefined;

  /**
   * What such a connection made the server allocate (thousands of streams and
   * calls) is garbage once it is gone, but JavaScriptCore collects by
   * allocation, and an otherwise quiet server allocates little: its RSS stayed
   * 25 MiB up for over 30 s. One collection a second after the close (at most
   * one per second) gives it back.
   */
  private collectSoon(): void {
    this.collecting ??= setTimeout(() => {
      this.collecting = undefined;
      Bun.gc(true);
    }, 1000).unref();
  }

  private check(): void {
    const now = Date.now();
    for (const [stream, w] of this.watched) {
      // What moves while the call makes progress: the request's frames, then the answer's buffered bytes.
      const delivering = stream.writableLength > 0 || stream.writableEnded;
      const mark = !w.requestDone ? w.frames : delivering ? stream.writableLength : -1;
      if (mark !== w.seen || mark === -1) {
        w.seen = mark;
        w.since = now;
        continue;
      }
      if (now - w.since <= this.stalledMs) continue;
      this.watched.delete(stream);
      this.close(w.session, w.requestDone ? "an answer was not taken" : "a request made no progress", this.stalledMs);
    }
    if (this.watched.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
