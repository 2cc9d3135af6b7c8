// Every error the mirror answers, from one table, rendered the way the
// distribution spec says ("Error Codes"): {"errors":[{code, message, detail}]}.
// Anything absent is a 404: containerd ranks a mirror's other failures above
// the upstream's answer and would report them instead of falling back.
import type { Reply } from "./reply";

/** code → HTTP status and the spec's message for it. */
export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: "blob unknown to registry" },
  MANIFEST_UNKNOWN: { status: 404, message: "manifest unknown" },
  NAME_UNKNOWN: { status: 404, message: "repository name not known to registry" },
  NAME_INVALID: { status: 400, message: "invalid repository name" },
  TAG_INVALID: { status: 400, message: "manifest tag did not match URI" },
  DIGEST_INVALID: { status: 400, message: "provided digest did not match uploaded content" },
  PAGINATION_NUMBER_INVALID: { status: 400, message: "invalid number of results requested" },
  UNSUPPORTED: { status: 405, message: "the operation is unsupported" },
  /** Not in the spec: a path outside the pull API (no catalog, no referrers, no uploads). */
  NOT_FOUND: { status: 404, message: "no such endpoint: this mirror serves the distribution-spec pull API, read-only" },
  /** Not in the spec: HTTP's own answer to a Range past the end (RFC 9110 15.5.17). */
  RANGE_NOT_SATISFIABLE: { status: 416, message: "requested range not satisfiable" },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error answer in the making: thrown by a handler, rendered by errorResponse. */
export class MirrorError extends Error {
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly detail: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message ?? ERROR_CODES[code].message);
    this.name = "MirrorError";
  }
}

/** Sent with every answer, as distribution does: clients probe `/v2/` for it. */
export const API_VERSION_HEADER = { "Docker-Distribution-API-Version": "registry/2.0" };

/** The spec's JSON for one error; HEAD gets the same headers and no body. */
export function errorReply(error: MirrorError, method: string): Reply {
  const { status } = ERROR_CODES[error.code];
  const body = JSON.stringify({ errors: [{ code: error.code, message: error.message, detail: error.detail }] });
  const headers = {
    ...API_VERSION_HEADER,
    ...error.headers,
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(body)),
  };
  return method === "HEAD" ? { status, headers } : { status, headers, body: new TextEncoder().encode(body) };
}
