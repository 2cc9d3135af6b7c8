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
// Every call passes here, so nothing long-lived refers to a stream: what is
// counted is counted per connection, by functions the stream itself holds.
// (A Map of open streams, or an array of new ones, cost a fifth of the
// rewriting path's CPU per call: whatever an old object refers to outlives
// the young generation of the garbage collector.) So stalls are judged per
// connection: one with a request incomplete or an answer undelivered, and
// neither a DATA frame nor a stream closed for `stalledMs`, ends.
//
// The bytes of incomplete requests are what a client can make the server hold
// (grpc-js keeps a message until it is whole, up to the 4 MiB receive limit,
// on each stream). They are bounded per connection and for all connections
// together: a DATA frame that takes either over its bound ends its connection
// the same way at once.
import type { Http2Session, ServerHttp2Stream } from "node:http2";
import type { Logger } from "../backend/contract";
import { coalescedCollection } from "./collection";
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

/** One connection's streams, counted. */
interface Connection {
  /** Streams open. */
  open: number;
  /** Of them, requests not whole yet, and answers ended but not yet closed. */
  incomplete: number;
  undelivered: number;
  /** Incomplete-request bytes held. */
  bytes: number;
  /** DATA frames received and streams closed: moves while the connection makes progress. */
  progress: number;
  /** What the last check saw of `progress`, and since when it has not moved. */
  seen: number;
  since: number;
}

export class StreamWatch {
  private readonly connections = new Map<Http2Session, Connection>();
  private open = 0;
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
    const session = stream.session;
    if (session === undefined) return;
    let c = this.connections.get(session);
    if (c === undefined) {
      c = { open: 0, incomplete: 0, undelivered: 0, bytes: 0, progress: 0, seen: -1, since: Date.now() };
      this.connections.set(session, c);
      session.once("close", () => this.connections.delete(session));
    }
    const conn = c;
    conn.open++;
    this.open++;
    if (this.open > MAX_OPEN_STREAMS) this.closeBusiest();
    let requestBytes = 0;
    let requestDone = (flags & END_STREAM) !== 0;
    let ended = false;
    const finishRequest = () => {
      if (requestDone) return;
      requestDone = true;
      conn.incomplete--;
      conn.bytes -= requestBytes;
      this.pendingTotal -= requestBytes;
    };
    if (!requestDone) {
      conn.incomplete++;
      // Bun hands each DATA frame's payload to push(), and null at the end of the
      // request: counting there needs no "data" listener, which would take the
      // reading out of grpc-js's hands.
      const push = stream.push;
      stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
        conn.progress++;
        if (chunk === null) finishRequest();
        else if (!requestDone && chunk instanceof Uint8Array && chunk.byteLength > 0) {
          requestBytes += chunk.byteLength;
          conn.bytes += chunk.byteLength;
          this.pendingTotal += chunk.byteLength;
          if (conn.bytes > MAX_PENDING_REQUEST_BYTES_PER_CONNECTION || this.pendingTotal > MAX_PENDING_REQUEST_BYTES) {
            this.close(session, "incomplete requests over their memory bound", conn.bytes);
          }
        }
        return push.call(stream, chunk, encoding);
      };
    }
    // A write of the answer is undelivered until its callback (Bun calls it once
    // the frames are out; a client that gives no credit holds it for ever).
    let writing = 0;
    const write = stream.write;
    stream.write = ((...args: unknown[]) => {
      const last = args.length - 1;
      const callback = args[last];
      if (typeof callback === "function") {
        writing++;
        conn.undelivered++;
        args[last] = (...results: unknown[]) => {
          if (writing > 0) {
            writing--;
            conn.undelivered--;
            conn.progress++;
          }
          return (callback as (...r: unknown[]) => unknown)(...results);
        };
      }
      return (write as (...a: unknown[]) => boolean).apply(stream, args);
    }) as ServerHttp2Stream["write"];
    // An answer ended (grpc-js ends every call) is undelivered until its stream closes.
    const end = stream.end;
    stream.end = ((...args: unknown[]) => {
      if (!ended) {
        ended = true;
        conn.undelivered++;
      }
      return (end as (...a: unknown[]) => ServerHttp2Stream).apply(stream, args);
    }) as ServerHttp2Stream["end"];
    stream.once("close", () => {
      finishRequest();
      conn.undelivered -= writing;
      writing = 0;
      if (ended) conn.undelivered--;
      conn.open--;
      conn.progress++;
      this.open--;
    });
    this.timer ??= setInterval(() => this.check(), this.tickMs).unref();
  };

  /** Over MAX_OPEN_STREAMS: the connections with the most open streams go until the rest is under it. */
  private closeBusiest(): void {
    let total = 0;
    for (const [session, c] of this.connections) if (!session.destroyed) total += c.open;
    const busiest = [...this.connections].filter(([session]) => !session.destroyed).sort((a, b) => b[1].open - a[1].open);
    for (const [session, c] of busiest) {
      if (total <= MAX_OPEN_STREAMS) break;
      this.close(session, "the most open streams while all connections hold too many", c.open);
      total -= c.open;
    }
  }

  /** Ends a connection with GOAWAY ENHANCE_YOUR_CALM. */
  private close(session: Http2Session, reason: string, detail: number): void {
    if (session.destroyed) return;
    this.log.debug("closing client connection", { reason, detail });
    // Not destroy(error, code): the session would emit "error", which nothing listens to.
    session.goaway(H2_ERROR.ENHANCE_YOUR_CALM);
    session.destroy();
    this.collectSoon();
  }

  /**
   * What such a connection made the server allocate (thousands of streams and
   * calls) is garbage once it is gone, but an otherwise quiet server's RSS
   * stayed 25 MiB up for over 30 s. One collection a second after the close
   * (at most one per second) gives it back.
   */
  private readonly collectSoon = coalescedCollection(1000);

  private check(): void {
    const now = Date.now();
    for (const [session, c] of this.connections) {
      // Only a connection that owes or is owed something can stall; a health Watch waiting for news does not.
      if (c.progress !== c.seen || (c.incomplete === 0 && c.undelivered === 0)) {
        c.seen = c.progress;
        c.since = now;
        continue;
      }
      if (now - c.since <= this.stalledMs) continue;
      c.since = now;
      this.close(session, c.incomplete > 0 ? "a request made no progress" : "an answer was not taken", this.stalledMs);
    }
    if (this.connections.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
