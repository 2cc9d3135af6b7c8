// Bounds the synchronous chains of write completions on the HTTP/2 streams
// of the gRPC server (docs/reliability.md, "HTTP/2 abuse").
//
// Bun's HTTP/2 session calls the callbacks of the frames it had queued (while
// the connection pushed back) synchronously when it flushes them, and a
// stream's end() flushes (its _final). grpc-js ends a unary call from the
// write callback of its answer. So with many answers queued, one flush
// completes answer A, whose callback ends call A, whose _final flushes and
// completes answer B, and so on: one nested chain of about a dozen frames per
// queued answer. A burst of 5,000 calls on one connection from a client that
// reads a little slowly overflowed the stack (RangeError: Maximum call stack
// size exceeded): the connection was dropped, and on the path-`:authority`
// path the process ended.
//
// Every completion callback of a server stream passes through `bounded`: up to
// MAX_NESTED completions run inside one another as before (the common case,
// one call at a time, is unchanged); a deeper one continues on the next tick,
// on a fresh stack, so the chain becomes a queue.
import type { Duplex } from "node:stream";

/** Completions that may run nested inside one another before the next one waits for the next tick. */
export const MAX_NESTED = 16;

let depth = 0;

type Callback = (error?: Error | null) => void;

function run(callback: Callback, error?: Error | null): void {
  depth++;
  try {
    callback(error);
  } finally {
    depth--;
  }
}

/** `callback`, run at once unless MAX_NESTED completions are already on the stack. */
export function bounded(callback: Callback): Callback {
  return (error) => {
    if (depth < MAX_NESTED) run(callback, error);
    else process.nextTick(run, callback, error);
  };
}

/** How deep completions are nested right now (for the unit test). */
export function nestedCompletions(): number {
  return depth;
}

interface WritableInternals {
  _write(chunk: unknown, encoding: BufferEncoding, callback: Callback): void;
  _writev?(chunks: unknown[], callback: Callback): void;
  _final?(callback: Callback): void;
}

/** Routes the completions of one HTTP/2 server stream through `bounded`. */
export function boundCompletions(stream: Duplex): void {
  const s = stream as unknown as WritableInternals;
  const write = s._write;
  s._write = (chunk, encoding, callback) => write.call(s, chunk, encoding, bounded(callback));
  const writev = s._writev;
  if (writev) s._writev = (chunks, callback) => writev.call(s, chunks, bounded(callback));
  const final = s._final;
  if (final) s._final = (callback) => final.call(s, bounded(callback));
}
