// What front mode's failures are, as values the server maps to gRPC status
// (src/server/errors.ts). Apart from the rest of src/runtime/, which is
// loaded only when the config has a [runtime] table.
import type { Status } from "nice-grpc";

/** The runtime cannot be reached, or did not answer within the deadline (gRPC UNAVAILABLE). */
export class RuntimeUnavailableError extends Error {
  constructor(readonly endpoint: string, detail: string) {
    super(`container runtime ${endpoint} is unavailable: ${detail}`);
    this.name = "RuntimeUnavailableError";
  }
}

/** The runtime answered with an error: its status code is kept, its message prefixed with its name. */
export class RuntimeCallError extends Error {
  constructor(readonly endpoint: string, readonly code: Status, method: string, detail: string) {
    super(`container runtime ${endpoint}: ${method}: ${detail}`);
    this.name = "RuntimeCallError";
  }
}

/** The runtime could not be given a preloaded image; `code` is the gRPC status the caller gets. */
export class PreloadPullError extends Error {
  constructor(message: string, readonly code: Status) {
    super(message);
    this.name = "PreloadPullError";
  }
}
