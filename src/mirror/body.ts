// From a ContentBody to the bytes on the wire. Every digest a client checks
// must verify, and a body that turns out wrong is never ended cleanly: the
// connection is aborted, so the client's download fails loudly.
//   - `file`: opened, and fstat says the region is there (Bun would quietly
//     send a shorter file with a matching Content-Length). The OS sends it
//     (a FileRegion: sendfile, from the mirror's sender thread) only when
//     this process has already hashed those exact bytes for this very file
//     identity (src/model/verified-files.ts: dev, inode, size, mtime, ctime,
//     and a ctime old enough when checked). A file not verified yet is
//     hashed first, from the descriptor opened to check it, before any
//     header is sent: a wrong one is then a 404, and a right one goes by
//     sendfile with its Content-Length. Only a file written too recently
//     to be remembered (its ctime under 2 s old) is sent as an `open` body
//     below, hashed as it goes. So no file's last byte leaves unverified;
//     the one window left is an in-place overwrite *during* a sendfile of
//     verified bytes, which the client's own digest check catches
//     (docs/mirror.md, "Bytes").
//   - `bytes`: hashed before anything is sent.
//   - `open`: hashed on the way; the last chunk is held back until the
//     digest verifies, so a wrong body never reaches its last byte. A body
//     whose `verifiedAs` key names inputs a whole stream of which already
//     hashed to this digest (verified-bodies.ts) is not hashed: it is opened
//     `trusted`, and then itself throws if an input differs from what the key
//     named (before that input's bytes) or changed while read (before its
//     end); the last chunk is still held back until it ends. Bun 1.4
//     sends a stream chunked and drops the Content-Length set for it
//     (oven-sh/bun#10507, open): a GET of such a body has no length header
//     (HEAD has it), and an aborted one lacks the last chunk, which every
//     HTTP client reports as a truncated body. The header is still set, so
//     it goes out once Bun sends it.
import { closeSync, constants, fstatSync, openSync, read } from "node:fs";
import type { ContentBody, ContentDescriptor, Logger } from "../backend/contract";
import { digestParts } from "../model/digest";
import { errorText } from "../model/error-text";
import { fileIdentity, nowNs, oldEnough, VerifiedFiles, type FileIdentity } from "../model/verified-files";
import { API_VERSION_HEADER } from "./errors";
import type { ByteRange } from "./range";
import type { FileRegion } from "./reply";
import { VerifiedBodies } from "./verified-bodies";

/** The one place a descriptor becomes headers, for GET and HEAD alike. */
export function descriptorHeaders(descriptor: ContentDescriptor, length = descriptor.size): Record<string, string> {
  return {
    ...API_VERSION_HEADER,
    "Content-Type": descriptor.mediaType,
    "Content-Length": String(length),
    "Docker-Content-Digest": descriptor.digest,
  };
}

/** The hex digest of `bytes` under the digest's algorithm. */
export function hashOf(digest: string, bytes: Uint8Array): string {
  const { algorithm } = digestParts(digest);
  return `${algorithm}:${new Bun.CryptoHasher(algorithm as "sha256").update(bytes).digest("hex")}`;
}

/** A body checked and ready to send (prepareBody). */
export interface ReadyBody {
  /** What is sent: the backend's body, or a `file` turned into an `open` read from the descriptor opened to check it. */
  body: ContentBody;
  /** Sent from the file by the sender thread: its bytes were verified before, under the same identity. */
  sendfile: boolean;
  /** With `sendfile`: the identity verified, which the file the sender opens must still have. */
  identity?: string;
  /** Closes what the check opened, if nothing else will (a HEAD, a refused Range); safe to call twice. */
  close(): void;
  /** Called once the whole body hashed to its digest. */
  verified?(): void;
  /** An `open` body whose inputs were verified before (its `verifiedAs` key): streamed without hashing. */
  trusted?: boolean;
}

/** File regions whose bytes hashed to their digest, by the opened file's identity. */
const verifiedFiles = new VerifiedFiles(4096);
/** `open` bodies whose whole stream hashed to their digest, by their `verifiedAs` key. */
const verifiedBodies = new VerifiedBodies(4096);
/** Read size for a file sent as a hashed stream. */
const FILE_CHUNK_BYTES = 256 * 1024;
/**
 * Hashes of file regions in progress, by region and file identity: the first
 * GETs of one file at once share one (100 clients asking for a new 256 MiB
 * blob together hashed it 100 times on the CRI's thread).
 */
const hashing = new Map<string, Promise<{ problem?: string; began: bigint }>>();
/** Read size for a file hashed before it is sent: the handlers' thread is the CRI's, so each read and hash step stays short (about 0.5 ms). */
const HASH_CHUNK_BYTES = 1024 * 1024;
/** A store path may be a FIFO: opening it must not block. */
const FILE_OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * A file region up to this size, not verified yet, is read whole and hashed
 * before anything is sent, as `bytes`: it then goes out with its
 * Content-Length, which Bun drops for a stream (see above). Bigger ones are
 * streamed, so memory stays bounded (8 such downloads at once: 8 MiB).
 */
const READ_WHOLE_BYTES = 1024 * 1024;

/**
 * Checks a body before any header is sent: a refusal (why it cannot be sent
 * as `digest`), or the body ready to send. `sending`: a GET, whose bytes will
 * be needed (a HEAD only needs the checks).
 */
export async function prepareBody(body: ContentBody, digest: string, sending = true): Promise<{ refusal: string } | { ready: ReadyBody }> {
  if (body.bytes !== undefined) return bytesBody(body, body.bytes, digest);
  if (body.file === undefined) return { ready: openBody(body, digest) };
  const prepared = prepareFile(body, body.file, digest);
  if (!sending || "refusal" in prepared || prepared.ready.sendfile) return prepared;
  if (body.size > READ_WHOLE_BYTES) return hashFirst(body, body.file, digest, prepared.ready);
  // Small and not verified: read whole from the opened file, and hashed like any `bytes`.
  const { ready } = prepared;
  const whole = Buffer.allocUnsafe(body.size);
  try {
    for (let done = 0; done < body.size; ) {
      const n = await readAt(ready.fd!, whole.subarray(done), body.file.offset + done);
      if (n === 0) return { refusal: `${body.file.path} became shorter while it was read` };
      done += n;
    }
  } catch (e) {
    return { refusal: errorText(e) };
  } finally {
    ready.close();
  }
  const checked = bytesBody({ mediaType: body.mediaType, size: body.size }, whole, digest);
  if ("ready" in checked) ready.verified!();
  return checked;
}

/**
 * A big file region not verified yet: hashed from the descriptor its check
 * opened (one hash shared by all who ask at once), then sent by the OS if
 * the file is still the one hashed. A file changed under 2 s ago (or with
 * a ctime ahead of the clock) may still be changing, and its identity
 * cannot be remembered: it is streamed from the same descriptor, hashed as
 * it goes with its last chunk held back, so an in-place rewrite during the
 * download aborts it instead of handing the client a mix (sendfile of
 * bytes hashed a moment before would send whatever the file then holds).
 */
async function hashFirst(body: ContentBody, file: { path: string; offset: number }, digest: string, ready: ReadyBody & { fd?: number; opened?: FileIdentity }): Promise<{ refusal: string } | { ready: ReadyBody }> {
  const opened = ready.opened!;
  if (!oldEnough(opened, nowNs())) return { ready };
  const what = `${digest}@${file.offset}`;
  const key = `${what}\0${opened.key}`;
  let check = hashing.get(key);
  if (check === undefined) {
    check = hashRegion(ready.fd!, file, body.size, digest, opened).finally(() => hashing.delete(key));
    hashing.set(key, check);
  }
  const { problem, began } = await check;
  if (problem !== undefined) {
    ready.close();
    return { refusal: problem };
  }
  verifiedFiles.remember(what, opened, began);
  if (verifiedFiles.has(what, opened)) {
    ready.close();
    return { ready: { body, sendfile: true, identity: opened.key, close() {} } };
  }
  return { ready };
}

/** Hashes a file region from `fd` (1 MiB reads), and checks the file kept its identity meanwhile. */
async function hashRegion(fd: number, file: { path: string; offset: number }, size: number, digest: string, opened: FileIdentity): Promise<{ problem?: string; began: bigint }> {
  const began = nowNs();
  const hasher = new Bun.CryptoHasher(digestParts(digest).algorithm as "sha256");
  const chunk = Buffer.allocUnsafe(Math.min(HASH_CHUNK_BYTES, size));
  try {
    for (let done = 0; done < size; ) {
      const n = await readAt(fd, chunk.subarray(0, Math.min(chunk.length, size - done)), file.offset + done);
      if (n === 0) throw new Error(`${file.path} became shorter while it was read`);
      hasher.update(chunk.subarray(0, n));
      done += n;
    }
    const actual = `${digestParts(digest).algorithm}:${hasher.digest("hex")}`;
    if (actual !== digest) throw new Error(`its bytes hash to ${actual}`);
    if (fileIdentity(fstatSync(fd, { bigint: true })).key !== opened.key) throw new Error(`${file.path} changed while it was hashed`);
    return { began };
  } catch (e) {
    return { problem: errorText(e), began };
  }
}

function openBody(body: ContentBody, digest: string): ReadyBody {
  if (body.verifiedAs === undefined) return { body, sendfile: false, close() {} };
  const key = body.verifiedAs();
  return {
    body,
    sendfile: false,
    close() {},
    trusted: key !== undefined && verifiedBodies.has(digest, key),
    // Asked again: the body may have learned its inputs while it was read.
    verified() {
      const learned = body.verifiedAs?.();
      if (learned !== undefined) verifiedBodies.remember(digest, learned);
    },
  };
}

function bytesBody(body: ContentBody, bytes: Uint8Array, digest: string): { refusal: string } | { ready: ReadyBody } {
  const actual = hashOf(digest, bytes);
  return actual === digest ? { ready: { body: { ...body, bytes }, sendfile: false, close() {} } } : { refusal: `its bytes hash to ${actual}` };
}

function prepareFile(body: ContentBody, file: { path: string; offset: number }, digest: string): { refusal: string } | { ready: ReadyBody & { fd?: number; opened?: FileIdentity } } {
  const { path, offset } = file;
  let fd: number;
  try {
    fd = openSync(path, FILE_OPEN_FLAGS);
  } catch (e) {
    return { refusal: errorText(e) };
  }
  let identity: FileIdentity;
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    if (st.size < BigInt(offset + body.size)) throw new Error(`${path} holds ${st.size} bytes, fewer than offset ${offset} + size ${body.size}`);
    identity = fileIdentity(st);
  } catch (e) {
    closeSync(fd);
    return { refusal: errorText(e) };
  }
  const what = `${digest}@${offset}`;
  // The sender opens the file by its path, and sends it only if it is still the file verified.
  if (verifiedFiles.has(what, identity)) {
    closeSync(fd);
    return { ready: { body, sendfile: true, identity: identity.key, close() {} } };
  }
  const began = nowNs();
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  const streamed: ContentBody = {
    mediaType: body.mediaType,
    size: body.size,
    async *open(start: number, signal: AbortSignal) {
      try {
        for (let at = start; at < body.size; ) {
          if (signal.aborted) throw signal.reason ?? new Error("aborted");
          const chunk = Buffer.allocUnsafe(Math.min(FILE_CHUNK_BYTES, body.size - at));
          const n = await readAt(fd, chunk, offset + at);
          if (n === 0) return; // the file got shorter: the stream says how much came
          yield n === chunk.length ? chunk : chunk.subarray(0, n);
          at += n;
        }
      } finally {
        close();
      }
    },
  };
  return { ready: { body: streamed, sendfile: false, close, verified: () => verifiedFiles.remember(what, identity, began), fd, opened: identity } };
}

function readAt(fd: number, buffer: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buffer, 0, buffer.length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

/**
 * The response body for `range` (inclusive) of a prepared body.
 * `done` runs once, when nothing more will be read from the store.
 */
export function bodyStream(ready: ReadyBody, digest: string, range: ByteRange, signal: AbortSignal, done: () => void, log: Logger): Uint8Array | FileRegion | ReadableStream<Uint8Array> {
  const { body } = ready;
  if (body.bytes !== undefined) {
    done();
    return body.bytes.subarray(range.start, range.end + 1);
  }
  if (body.file !== undefined && ready.sendfile) {
    // Opened by the sender as it starts sending; an open file stays readable whatever the store does next.
    done();
    const at = body.file.offset;
    return { path: body.file.path, start: at + range.start, end: at + range.end, identity: ready.identity };
  }
  return openedStream(body, digest, range, signal, done, log, ready.verified, ready.trusted === true);
}

/**
 * An `open` body as a stream. The whole body is verified against the digest
 * (the last chunk waits for it); a part of it (a Range) cannot be, and is
 * checked for length only: the client verifies the blob it puts together.
 * A `trusted` body is not hashed: it checks its own inputs (see the top);
 * its last chunk still waits for it to end cleanly.
 */
function openedStream(
  body: ContentBody,
  digest: string,
  range: ByteRange,
  signal: AbortSignal,
  done: () => void,
  log: Logger,
  verified: (() => void) | undefined,
  trusted: boolean,
): ReadableStream<Uint8Array> {
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
  const newHasher = () => (whole ? new Bun.CryptoHasher(digestParts(digest).algorithm as "sha256") : undefined);
  let trustedNow = trusted;
  let hasher = trusted ? undefined : newHasher();
  let chunks: AsyncIterator<Uint8Array> | undefined;
  let seen = 0;
  let held: Uint8Array | undefined;
  let enqueued = false;

  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, reason: string) => {
    const fields = { digest, sent: seen - (held?.length ?? 0), size: body.size, reason };
    if (clientGone) log.debug("mirror: the client went away mid-body", fields);
    else log.error("mirror: body failed mid-way; connection aborted", fields);
    stop.abort(new Error(reason));
    void chunks?.return?.();
    finish();
    controller.error(new Error(reason));
  };

  const pull = async (controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> => {
    try {
      chunks ??= body.open!(range.start, stop.signal, trustedNow || undefined)[Symbol.asyncIterator]();
      for (;;) {
        const next = await chunks.next();
        if (next.done) {
          if (seen !== wanted) return fail(controller, `the body ended after ${seen} of ${wanted} bytes`);
          if (hasher) {
            const actual = `${digestParts(digest).algorithm}:${hasher.digest("hex")}`;
            if (actual !== digest) return fail(controller, `the body hashes to ${actual}`);
            verified?.();
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
          enqueued = true;
          return;
        }
      }
    } catch (e) {
      if (trustedNow && !enqueued && !stop.signal.aborted) {
        // Opened trusted, the body found an input other than the one verified (a file with a new
        // ctime) before any byte left: it is opened again and hashed, and the client sees nothing of it.
        log.debug("mirror: a body's inputs changed since it was verified; hashed instead", { digest, reason: errorText(e) });
        void chunks?.return?.();
        chunks = undefined;
        trustedNow = false;
        hasher = newHasher();
        seen = 0;
        held = undefined;
        return pull(controller);
      }
      fail(controller, `open() failed: ${errorText(e)}`);
    }
  };

  return new ReadableStream<Uint8Array>({
    pull,
    cancel() {
      clientGone = true;
      stop.abort(new Error("the client went away"));
      void chunks?.return?.();
      finish();
    },
  });
}
