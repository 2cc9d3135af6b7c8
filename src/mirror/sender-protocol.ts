// The messages between the mirror's handlers (the main thread, which owns
// the backend registry and the CRI socket) and its sender thread (sender.ts,
// a Worker that owns the TCP port and sends the bytes). Plain data, copied by
// postMessage; one request is one `id` on both sides.
import type { FileRegion } from "./reply";

/** The sender's reply body: none, bytes, a file region the OS sends, or a stream the handlers feed chunk by chunk. */
export type WireBody = { bytes: Uint8Array } | { file: FileRegion } | { stream: true };

/** From the handlers to the sender. */
export type ToSender =
  | { t: "listen"; host: string; port: number; maxRequestBodySize: number }
  | { t: "reply"; id: number; status: number; headers: Record<string, string>; body?: WireBody }
  /** A stream's next chunk, sent because the sender asked for `more`. */
  | { t: "chunk"; id: number; bytes: Uint8Array }
  /** The stream ended whole: the sender ends the response. */
  | { t: "end"; id: number }
  /** The stream failed: the sender aborts the connection, so the client's download fails. */
  | { t: "fail"; id: number; reason: string }
  /** Stop accepting; after `graceMs`, cut what is still sending; then say `stopped`. */
  | { t: "stop"; graceMs: number };

/** From the sender to the handlers. */
export type FromSender =
  | { t: "listening"; port: number }
  | { t: "failed"; error: string }
  | { t: "request"; id: number; method: string; url: string; range: string | null }
  /** The stream of `id` may take one more chunk. */
  | { t: "more"; id: number }
  /** The client of `id` left before its body ended (or the body was not wanted): stop reading it. */
  | { t: "gone"; id: number }
  | { t: "log"; level: "warn" | "error"; message: string; fields: Record<string, unknown> }
  | { t: "stopped" };

/** How many chunks of a stream may be on their way to the sender at once: two keep the socket fed without a round trip between chunks. */
export const STREAM_WINDOW = 2;
