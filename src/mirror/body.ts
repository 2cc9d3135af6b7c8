// From a ContentBody to the bytes on the wire. Every digest a client checks
// must verify, and a body that turns out wrong is never ended cleanly: the
// connection is aborted, so the client's download fails loudly.
//   - `file`: the OS sends it (Bun.file(...).slice in a Response: sendfile),
//     after a stat says the region is there (Bun would quietly send a
//     shorter file with a matching Content-Length).
//   - `bytes`: hashed before anything is sent.
//   - `open`: hashed on the way; the last chunk is held back until the
//     digest verifies, so a wrong body never reaches its last byte. Bun 1.4
//     sends a stream chunked and drops the Content-Length set for it
//     (oven-sh/bun#10507, open): a GET of such a body has no length header
//     (HEAD has it), and an aborted one lacks the last chunk, which every
//     HTTP client reports as a truncated body. The header is still set, so
//     it goes out once Bun sends it.
import { statSync } from "node:fs";
import type { ContentBody, ContentDescriptor, Logger } from "../backend/contract";
import { digestParts } from "../model/digest";
import { errorText } from "../model/error-text";
import { API_VERSION_HEADER } from "./errors";
import type { ByteRange } from "./range";

/** The one place a descriptor becomes headers, for GET and HEAD alike. */
export function descriptorHeaders(descriptor: ContentDescriptor, length = descriptor.size): Record<string, string> {
  return {
    ...API_VERSION_HEADER,
    "Content-Type": descriptor.mediaType,
    "Content-Length": String(length),
    "Docker-Content-Digest": descriptor.digest,
  };
}

/**
 * Sent with a file body: Bun otherwise adds `Content-Disposition: filename="…"`
 * with the store file's name (a tarball's, say), which is none of a client's business.
 */
export const FILE_BODY_HEADERS: Readonly<Record<string, string>> = { "Content-Disposition": "inline" };

/** The hex digest of `bytes` under the digest's algorithm. */
export function hashOf(digest: string, bytes: Uint8Array): string {
  const { algorithm } = digestParts(digest);
  return `${algorithm}:${new Bun.CryptoHasher(algorithm as "sha256").update(bytes).digest("hex")}`;
}

/** Why a body cannot be sent as `digest`, checked before any header goes out; undefined when it can. */
export function bodyRefusal(body: ContentBody, digest: string): string | undefined {
  if (body.bytes !== undefined) {
    const actual = hashOf(digest, body.bytes);
    return actual === digest ? undefined : `its bytes hash to ${actual}`;
  }
  if (body.file !== undefined) {
    try {
      const st = statSync(body.file.path);
      if (!st.isFile()) return `${body.file.path} is not a regular file`;
      if (st.size < body.file.offset + body.size) return `${body.file.path} holds ${st.size} bytes, fewer than offset ${body.file.offset} + size ${body.size}`;
    } catch (e) {
      return errorText(e);
    }
  }
  return undefined;
}

/**
 * The response body for `range` (inclusive) of a body bodyRefusal() passed.
 * `done` runs once, when nothing more will be read from the store.
 */
export function bodyStream(body: ContentBody, digest: string, range: ByteRange, signal: AbortSignal, done: () => void, log: Logger): Uint8Array | Blob | ReadableStream<Uint8Array> {
  if (body.bytes !== undefined) {
    done();
    return body.bytes.subarray(range.start, range.end + 1);
  }
  if (body.file !== undefined) {
    // Opened by Bun as it starts sending; an open file stays readable whatever the store does next.
    done();
    const at = body.file.offset;
    return Bun.file(body.file.path).slice(at + range.start, at + range.end + 1);
  }
  return openedStream(body, digest, range, signal, done, log);
}

/**
 * An `open` body as a stream. The whole body is verified against the digest
 * (the last chunk waits for it); a part of it (a Range) cannot be, and is
 * checked for length only: the client verifies the blob it puts together.
 */
function openedStream(body: ContentBody, digest: string, range: ByteRange, signal: AbortSignal, done: () => void, log: Logger): ReadableStream<Uint8Array> {
  const whole = range.start === 0 && range.end === body.size - 1;
  const wanted = range.end - range.start + 1;
  const stop = new AbortController();
  let clientGone = false;
  const onClientGone = () => {
    clientGone = true;
    stop.abort(new Error("the client went away"));
  };
  signal.addEventListener("abort", onClientGone, { once: true });
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    signal.removeEventListener("abort", onClientGone);
    done();
  };
  const hasher = whole ? new Bun.CryptoHasher(digestParts(digest).algorithm as "sha256") : undefined;
  let chunks: AsyncIterator<Uint8Array> | undefined;
  let seen = 0;
  let held: Uint8Array | undefined;

  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, reason: string) => {
    const fields = { digest, sent: seen - (held?.length ?? 0), size: body.size, reason };
    if (clientGone) log.debug("mirror: the client went away mid-body", fields);
    else log.error("mirror: body failed mid-way; connection aborted", fields);
    stop.abort(new Error(reason));
    void chunks?.return?.();
    finish();
    controller.error(new Error(reason));
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        chunks ??= body.open!(range.start, stop.signal)[Symbol.asyncIterator]();
        for (;;) {
          const next = await chunks.next();
          if (next.done) {
            if (seen !== wanted) return fail(controller, `the body ended after ${seen} of ${wanted} bytes`);
            if (hasher) {
              const actual = `${digestParts(digest).algorithm}:${hasher.digest("hex")}`;
              if (actual !== digest) return fail(controller, `the body hashes to ${actual}`);
            }
            if (held) controller.enqueue(held);
            finish();
            controller.close();
            return;
          }
          let chunk = next.value;
          if (!(chunk instanceof Uint8Array)) return fail(controller, "open() yielded something other than bytes");
          if (chunk.length === 0) continue;
          if (!whole && seen + chunk.length > wanted) chunk = chunk.subarray(0, wanted - seen);
          seen += chunk.length;
          if (seen > wanted) return fail(controller, `the body is longer than ${wanted} bytes`);
          hasher?.update(chunk);
          const ready = held;
          held = chunk;
          if (!whole && seen === wanted) {
            // A part ends where it was asked to; the rest of the body is not read.
            void chunks.return?.();
            chunks = (async function* () {})()[Symbol.asyncIterator]();
          }
          if (ready) {
            controller.enqueue(ready);
            return;
          }
        }
      } catch (e) {
        fail(controller, `open() failed: ${errorText(e)}`);
      }
    },
    cancel() {
      clientGone = true;
      stop.abort(new Error("the client went away"));
      void chunks?.return?.();
      finish();
    },
  });
}
