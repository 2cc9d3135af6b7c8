// A Reply: what the pull API answers, before it is HTTP. The handlers
// (distribution.ts) run on the thread that owns the backend registry; the
// bytes go out from the mirror's sender thread (sender.ts), so a reply is
// plain data that crosses between them (sender-protocol.ts).

/** A region of a file the sender reads and sends, `end` inclusive. */
export interface FileRegion {
  path: string;
  start: number;
  end: number;
  /** The identity (verified-files.ts) the opened file must have: the one whose bytes were verified. */
  identity?: string;
  /** The answer when the file is gone or changed before its first byte: a 404 of this code. */
  missing?: "BLOB_UNKNOWN" | "MANIFEST_UNKNOWN";
}

export type ReplyBody = Uint8Array | FileRegion | ReadableStream<Uint8Array>;

export interface Reply {
  status: number;
  headers: Record<string, string>;
  /** None: a HEAD, or an empty body. */
  body?: ReplyBody;
}

/** A request as the handlers read it: method, URL, the one header they use, and whether the client is still there. */
export interface MirrorRequest {
  method: string;
  url: string;
  range: string | null;
  signal: AbortSignal;
}

export function isFileRegion(body: ReplyBody): body is FileRegion {
  return !(body instanceof Uint8Array) && !(body instanceof ReadableStream);
}
