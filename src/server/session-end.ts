// A connection the server ends gets its GOAWAY first, on both connection
// paths (docs/reliability.md, "HTTP/2 abuse"). Bun's HTTP/2 session loses it
// in two ways, one per path:
//
//   - on a socket (the `:authority` localhost path), the session writes its
//     frames straight to the socket and keeps what the socket does not take
//     in a buffer of its own; destroy() frees that buffer at once. So when
//     answers wait behind a full socket (a client that reads a little late),
//     a destroy drops them and the GOAWAY queued after them: the client sees
//     the answers the socket took, then the close, and not a word about the
//     rest. This is what a burst over SETTINGS_MAX_CONCURRENT_STREAMS did:
//     Bun refuses 100 streams, then sends GOAWAY ENHANCE_YOUR_CALM and
//     destroys the session; when the first part of the burst had been
//     answered already (it came in an earlier read), those answers filled the
//     socket and the GOAWAY was lost (166 answered, 4,835 calls without a word).
//   - on a stream of ours (the header rewriter's NormalizedConnection), the
//     session writes the GOAWAY of destroy() after it has marked itself
//     disconnected, so the frame is dropped.
//
// Both are fixed by wrapping the session's destroy, which every way of ending
// a session goes through (Bun's own flood limits, grpc-js, stream-watch.ts):
// on either path it waits for the session's output to leave (drainBeforeDestroy),
// and on a stream of ours the GOAWAY is sent while the session still writes
// (goawayBeforeDestroy).
import type { ServerHttp2Session } from "node:http2";
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { coalescedCollection } from "./collection";
import { H2_ERROR } from "./h2-authority";

/**
 * Bun's frame parser behind a session (a `Symbol.for` key of Bun's
 * node:http2, 1.4.5 pinned by package.json): how much it still holds for the
 * connection, and its streams. A Bun upgrade that moved it is logged as an
 * error at the first connection (grpc-server.ts), and test_h2_abuse.py fails.
 */
const BUN_H2_NATIVE = Symbol.for("::bunhttp2native::");

interface NativeParser {
  /** Bytes the session has written that the connection has not taken yet (flow control's included). */
  bufferSize(): number;
  /** Calls `callback` for each stream the session still has. */
  forEachStream(callback: () => void): void;
}

function nativeParser(session: ServerHttp2Session): NativeParser | undefined {
  const parser: unknown = (session as unknown as Record<symbol, unknown>)[BUN_H2_NATIVE];
  if (parser === null || typeof parser !== "object") return undefined;
  const p = parser as Partial<NativeParser>;
  return typeof p.bufferSize === "function" && typeof p.forEachStream === "function" ? (parser as NativeParser) : undefined;
}

type Destroy = (error?: unknown, code?: number) => void;

/** The code Bun's destroy sends: the one given, else INTERNAL_ERROR for an error, else NO_ERROR. */
function goawayCode(error: unknown, code: number | undefined): number {
  return typeof error === "number" ? error : (code ?? (error != null ? H2_ERROR.INTERNAL_ERROR : H2_ERROR.NO_ERROR));
}

/** How often an ending session is looked at. */
const DRAIN_CHECK_MS = 50;
/**
 * Calls still open that have not moved for this many checks are not waited
 * for (stalled ones never will). Counted in checks, not milliseconds: between
 * two checks the event loop ran everything that was ready, so a process that
 * was only descheduled a while does not cut calls that were about to answer.
 */
const CALLS_SETTLE_CHECKS = 4;

/**
 * A session ended with calls open or output held (a burst, a flood, thousands
 * of streams) leaves that much garbage, which a quiet server collects late:
 * after a refused-stream flood ended by Bun rather than stream-watch.ts (which
 * asks for its own), RSS stayed 12 MiB up 15 s later. One full collection a
 * second after such an end (at most one a second) gives it back.
 */
const collectSoon = coalescedCollection(1000);

function openStreams(parser: NativeParser): number {
  let n = 0;
  parser.forEachStream(() => n++);
  return n;
}

/**
 * A destroy waits until the session's output has left and its open calls
 * have been answered, so the client reads every answer and refusal, then the
 * GOAWAY, then the close. The session stops reading meanwhile (nothing new is
 * taken in). Calls that stopped moving (stalled: what stream-watch.ts closes
 * connections for) are not waited for past CALLS_SETTLE_CHECKS, nor is output the
 * client gave no connection credit for; a client that takes none of the
 * output for `graceMs` is cut off (it reads nothing either way). Looked at on
 * a timer, not on "drain": the last of the output can go out in writes that
 * never met a full socket, which emit none.
 */
function drainBeforeDestroy(session: ServerHttp2Session, socket: Duplex, parser: NativeParser, graceMs: number): void {
  const destroy = session.destroy as Destroy;
  let draining: { error: unknown; code: number | undefined } | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  let busy = false;
  const finish = () => {
    if (draining === undefined) return;
    const { error, code } = draining;
    draining = undefined;
    clearInterval(timer);
    destroy.call(session, error, code);
    if (busy) collectSoon();
  };
  session.destroy = function (this: ServerHttp2Session, error?: unknown, code?: number) {
    if (draining !== undefined) return;
    if (session.destroyed || socket.destroyed) return destroy.call(this, error, code);
    draining = { error, code };
    socket.pause();
    socket.once("close", finish);
    let [held, open] = [parser.bufferSize(), openStreams(parser)];
    busy = held > 0 || open > 0;
    let taken = Date.now();
    let unmoved = 0;
    timer = setInterval(() => {
      const now = Date.now();
      const [nowHeld, nowOpen] = [parser.bufferSize(), openStreams(parser)];
      // Progress: the client took some of the output, a call ended.
      if (nowHeld < held || nowHeld === 0) taken = now;
      unmoved = nowOpen < open ? 0 : unmoved + 1;
      [held, open] = [nowHeld, nowOpen];
      // Output the client gives no credit for (a connection window of 0) cannot go out: not waited for.
      const blocked = held > 0 && session.state.remoteWindowSize === 0;
      if ((held === 0 || blocked) && (open === 0 || unmoved >= CALLS_SETTLE_CHECKS)) return finish();
      if (now - taken > graceMs) {
        finish();
        socket.destroy();
      }
    }, DRAIN_CHECK_MS);
  } as ServerHttp2Session["destroy"];
}

/** On a stream of ours: the GOAWAY of destroy() is sent while the session still writes. */
function goawayBeforeDestroy(session: ServerHttp2Session, connection: Duplex): void {
  const destroy = session.destroy as Destroy;
  session.destroy = function (this: ServerHttp2Session, error?: unknown, code?: number) {
    // After close() the session's own GOAWAY went out already, so only a destroy with a code adds one, as Bun's does.
    if (!session.destroyed && (!session.closed || code !== undefined)) {
      try {
        session.goaway(goawayCode(error, code));
        // The session queues frames for a stream transport until it is told the
        // stream drained; that flush is the only one a caller can start.
        connection.emit("drain");
      } catch {
        // the session cannot write any more: nothing to add
      }
    }
    return destroy.call(this, error, code);
  } as ServerHttp2Session["destroy"];
}

/**
 * Makes every end of `session` (on `connection`, a socket or a stream of
 * ours) send its GOAWAY first, after the answers to the calls it had taken.
 * `graceMs`: how long a client that reads nothing may hold an ended
 * session's output. False when Bun's session has no frame parser where this
 * looks (a Bun upgrade moved it): then only the stream transport's GOAWAY is kept.
 */
export function sessionEndsWithGoaway(session: ServerHttp2Session, connection: Duplex, graceMs: number): boolean {
  if (!(connection instanceof Socket)) goawayBeforeDestroy(session, connection);
  const parser = nativeParser(session);
  if (parser === undefined) return false;
  drainBeforeDestroy(session, connection, parser, graceMs);
  return true;
}
