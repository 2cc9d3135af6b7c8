// The mirror's sender thread: a Worker that owns the mirror's TCP port
// (Bun.serve) and sends the bytes, so a download never runs on the thread
// that answers the CRI socket. Bun sends a file by looping sendfile(2) on the
// thread that serves it: with the mirror on the CRI's thread, ImageStatus
// waited behind 8 big downloads at 3.6× its idle latency, and at about the
// machine's own 2× with the sending here (docs/performance.md, "The mirror").
//
// It knows nothing of images: each request goes to the handlers on the main
// thread (sender-protocol.ts), and their reply comes back as headers and a
// body: bytes, a file region (sent by the OS, from here), or a stream whose
// chunks the handlers send as this side asks for them, a few at a time. A
// stream the handlers fail is errored here, which aborts the connection: the
// client's download fails, and is never handed a wrong body that ends cleanly.
//
// Bun.serve, not node:http, and measured for it (Bun 1.4.5). node:http keeps
// the Content-Length a handler sets on a streamed body, which Bun.serve
// drops (oven-sh/bun#10507, open: such a body goes chunked), and with 1 MiB
// reads, two ahead, it sent 256 MiB as fast as sendfile (0.12–0.14 s; 8 at
// once 0.86 s against 1.08). But every byte passes through its buffers: a
// client that stops reading held ~1.4 MiB each (the mirror soak's 16 slow
// and stalled readers: +23 MiB, and +93 MiB over the whole soak, against
// +4 MiB here), where a file sent by sendfile holds nothing of ours.
import { statSync } from "node:fs";
import type { Server } from "bun";
import { fileIdentity } from "../model/verified-files";
import { errorReply, MirrorError } from "./errors";
import type { FileRegion } from "./reply";
import { STREAM_WINDOW, type FromSender, type ToSender } from "./sender-protocol";

/**
 * Sent with a file body: Bun otherwise adds `Content-Disposition: filename="…"`
 * with the store file's name (a tarball's, say), which is none of a client's business.
 */
const FILE_BODY_HEADERS: Readonly<Record<string, string>> = { "Content-Disposition": "inline" };

declare const self: Worker;

function post(message: FromSender): void {
  self.postMessage(message);
}

/** Requests waiting for their reply, by id. */
const waiting = new Map<number, { resolve(response: Response): void; request: Request }>();
/** A connection with nothing to read or send for this long is closed (idle keep-alives, headers never finished, clients that stopped reading). */
const IDLE_TIMEOUT_S = 10;
/**
 * How long a request may wait for the handlers' reply. Longer than the idle
 * timeout: the first GET of a big file waits while the handlers hash it
 * (256 MiB: ~0.2 s here, and 10 s or more for a few GiB on a slow device).
 */
const REPLY_WAIT_S = 120;
/** Stream bodies being fed, by id. */
const feeds = new Map<number, Feed>();
let server: Server<undefined> | undefined;
let nextId = 1;

/** What the handlers have sent of one stream body and the sender has not passed on yet. */
interface Feed {
  chunks: Uint8Array[];
  ended: boolean;
  failed?: string;
  wake?: () => void;
}

self.onmessage = (event: MessageEvent<ToSender>) => {
  const m = event.data;
  switch (m.t) {
    case "listen":
      return listen(m.host, m.port, m.maxRequestBodySize);
    case "reply":
      return reply(m);
    case "chunk":
    case "end":
    case "fail": {
      const feed = feeds.get(m.id);
      if (!feed) return;
      if (m.t === "chunk") feed.chunks.push(m.bytes);
      else if (m.t === "end") feed.ended = true;
      else feed.failed = m.reason;
      feed.wake?.();
      return;
    }
    case "stop":
      void stop(m.graceMs);
      return;
  }
};

function listen(hostname: string, port: number, maxRequestBodySize: number): void {
  try {
    server = Bun.serve({
      hostname,
      port,
      maxRequestBodySize,
      idleTimeout: IDLE_TIMEOUT_S,
      fetch: forward,
      // Only reached by a failure outside forward(), which never throws.
      error(e) {
        post({ t: "log", level: "error", message: "mirror: request failed in the sender", fields: { error: e.message } });
        return toResponse(errorReply(new MirrorError("NOT_FOUND", "internal error; imagelet's log has it"), "GET"));
      },
    });
    post({ t: "listening", port: server.port ?? port });
  } catch (e) {
    post({ t: "failed", error: e instanceof Error ? e.message : String(e) });
  }
}

/** A request, passed to the handlers; answered when their reply comes. */
function forward(request: Request, bun: Server<undefined>): Promise<Response> {
  const id = nextId++;
  request.signal.addEventListener("abort", () => gone(id), { once: true });
  bun.timeout(request, REPLY_WAIT_S);
  return new Promise((resolve) => {
    waiting.set(id, { resolve, request });
    post({ t: "request", id, method: request.method, url: request.url, range: request.headers.get("range") });
  });
}

/** The client of `id` left (or its body is not wanted): the handlers stop reading it. */
function gone(id: number): void {
  const feed = feeds.get(id);
  if (feed) {
    feeds.delete(id);
    feed.failed ??= "the client went away";
    feed.wake?.();
  }
  post({ t: "gone", id });
}

function reply(m: Extract<ToSender, { t: "reply" }>): void {
  const w = waiting.get(m.id);
  if (!w) return;
  waiting.delete(m.id);
  if (w.request.signal.aborted) {
    w.resolve(new Response(null, { status: 499 }));
    return;
  }
  server?.timeout(w.request, IDLE_TIMEOUT_S);
  w.resolve(toResponse(m, m.id));
}

function toResponse(m: { status: number; headers: Record<string, string>; body?: unknown }, id?: number): Response {
  const body = m.body as Extract<ToSender, { t: "reply" }>["body"] | Uint8Array | undefined;
  let init: Uint8Array | Blob | ReadableStream<Uint8Array> | null = null;
  if (body instanceof Uint8Array) init = body;
  else if (body === undefined) init = null;
  else if ("bytes" in body) init = body.bytes;
  else if ("file" in body) return fileResponse(m.status, m.headers, body.file);
  else if (id !== undefined) init = streamed(id);
  return new Response(init, { status: m.status, headers: m.headers });
}

/**
 * A file region, sent by the OS (sendfile) from the file Bun opens by its
 * path: only if the path still names the file whose bytes the handlers
 * verified (it may have been replaced since); otherwise a 404 the client can retry.
 */
function fileResponse(status: number, headers: Record<string, string>, region: FileRegion): Response {
  let now: string | undefined;
  try {
    now = fileIdentity(statSync(region.path, { bigint: true })).key;
  } catch {
    now = undefined;
  }
  if (region.identity !== undefined && now !== region.identity) {
    post({ t: "log", level: "warn", message: "mirror: a verified file changed before it was sent; not served", fields: { path: region.path } });
    return toResponse(errorReply(new MirrorError(region.missing ?? "BLOB_UNKNOWN", "the file changed since its bytes were verified; try again"), "GET"));
  }
  return new Response(Bun.file(region.path).slice(region.start, region.end + 1), { status, headers: { ...headers, ...FILE_BODY_HEADERS } });
}

/** A stream body fed by the handlers: STREAM_WINDOW chunks asked ahead, one more asked as each is passed on. */
function streamed(id: number): ReadableStream<Uint8Array> {
  const feed: Feed = { chunks: [], ended: false };
  feeds.set(id, feed);
  for (let i = 0; i < STREAM_WINDOW; i++) post({ t: "more", id });
  const pull = async (controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> => {
    for (;;) {
      if (feed.failed !== undefined) {
        feeds.delete(id);
        // No reason given: Bun prints an errored body's reason to stderr (a source excerpt of this
        // bundle, for an Error); the handlers have logged it already.
        controller.error();
        return;
      }
      const chunk = feed.chunks.shift();
      if (chunk) {
        controller.enqueue(chunk);
        if (!feed.ended) post({ t: "more", id });
        return;
      }
      if (feed.ended) {
        feeds.delete(id);
        controller.close();
        return;
      }
      await new Promise<void>((resolve) => (feed.wake = resolve));
      feed.wake = undefined;
    }
  };
  return new ReadableStream<Uint8Array>({ pull, cancel: () => gone(id) }, { highWaterMark: 0 });
}

async function stop(graceMs: number): Promise<void> {
  if (server) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cut = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([server.stop(false), cut]);
    clearTimeout(timer);
    await server.stop(true);
  }
  post({ t: "stopped" });
}
