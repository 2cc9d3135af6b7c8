// Closes connections that hold requests open without progress
// (docs/reliability.md, "HTTP/2 abuse"). A stream counts against
// SETTINGS_MAX_CONCURRENT_STREAMS, and holds what it has received, until its
// request is complete; a client can open the limit's worth of streams, send
// part of each request and then only answer pings, which keeps the connection
// out of every other timeout (it is neither idle nor unresponsive). No real
// client leaves a request half sent: gRPC clients send a unary request at once,
// and a streaming one keeps sending or half-closes.
//
// One timer for all streams, as ConnectionWatch has for connections: each
// stream whose request is incomplete counts the DATA frames it receives; one
// that received none for `stalledMs` ends its connection with GOAWAY
// ENHANCE_YOUR_CALM.
//
// The bytes of incomplete requests are what such a client makes the server
// hold (grpc-js keeps a message until it is whole, up to the 4 MiB receive
// limit, on each of SETTINGS_MAX_CONCURRENT_STREAMS streams). They are
// bounded per connection and for all connections together: a DATA frame that
// takes either over its bound ends its connection the same way at once.
import type { ServerHttp2Stream } from "node:http2";
import type { Logger } from "../backend/contract";
import { H2_ERROR } from "./h2-authority";

const END_STREAM = 0x1;

/** Incomplete-request bytes one connection may make the server hold: one request of the 4 MiB receive limit. */
export const MAX_PENDING_REQUEST_BYTES_PER_CONNECTION = 4 * 1024 * 1024;
/** The same, all connections together. */
export const MAX_PENDING_REQUEST_BYTES = 32 * 1024 * 1024;

interface Watched {
  /** The stream's connection (its HTTP/2 session). */
  session: object;
  /** Bytes of this request received so far (counted in `pending` until the request ends). */
  bytes: number;
  /** DATA frames (and the end) received so far. */
  progress: number;
  /** `progress` at the last check, and since when it has not moved. */
  seen: number;
  since: number;
}

export class StreamWatch {
  private readonly watched = new Map<ServerHttp2Stream, Watched>();
  /** Incomplete-request bytes per connection (its HTTP/2 session), and all together. */
  private readonly pending = new Map<object, number>();
  private pendingTotal = 0;
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
    if ((flags & END_STREAM) !== 0) return; // the request came whole with its headers
    const session: object | undefined = stream.session;
    if (session === undefined) return;
    const w: Watched = { session, bytes: 0, progress: 0, seen: 0, since: Date.now() };
    this.watched.set(stream, w);
    // Bun hands each DATA frame's payload to push(): counting there needs no
    // "data" listener, which would take the reading out of grpc-js's hands.
    const push = stream.push;
    const watch = this;
    stream.push = function (this: ServerHttp2Stream, chunk: unknown, encoding?: BufferEncoding) {
      w.progress++;
      const n = chunk instanceof Uint8Array ? chunk.byteLength : 0;
      if (n > 0 && watch.watched.has(stream)) {
        w.bytes += n;
        const held = (watch.pending.get(session) ?? 0) + n;
        watch.pending.set(session, held);
        watch.pendingTotal += n;
        if (held > MAX_PENDING_REQUEST_BYTES_PER_CONNECTION || watch.pendingTotal > MAX_PENDING_REQUEST_BYTES) {
          watch.close(stream, "incomplete requests over their memory bound", held);
        }
      }
      return push.call(this, chunk, encoding);
    };
    const done = () => this.forget(stream);
    stream.once("end", done);
    stream.once("close", done);
    this.timer ??= setInterval(() => this.check(), this.tickMs).unref();
  };

  private forget(stream: ServerHttp2Stream): void {
    const w = this.watched.get(stream);
    if (w === undefined) return;
    this.watched.delete(stream);
    if (w.bytes === 0) return;
    this.pendingTotal -= w.bytes;
    const held = (this.pending.get(w.session) ?? 0) - w.bytes;
    if (held <= 0) this.pending.delete(w.session);
    else this.pending.set(w.session, held);
  }

  /** Ends the connection of `stream` with GOAWAY ENHANCE_YOUR_CALM. */
  private close(stream: ServerHttp2Stream, reason: string, detail: number): void {
    const session = stream.session;
    if (session === undefined || session.destroyed) return;
    this.log.debug("closing client connection", { reason, detail });
    // Not destroy(error, code): the session would emit "error", which nothing listens to.
    session.goaway(H2_ERROR.ENHANCE_YOUR_CALM);
    session.destroy();
  }

  private check(): void {
    const now = Date.now();
    for (const [stream, w] of this.watched) {
      if (w.progress !== w.seen) {
        w.seen = w.progress;
        w.since = now;
        continue;
      }
      if (now - w.since <= this.stalledMs) continue;
      this.close(stream, "a request made no progress", this.stalledMs);
      this.forget(stream);
    }
    if (this.watched.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
