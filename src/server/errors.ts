// Domain errors → gRPC status, in one place. Handlers throw what the model
// throws; this middleware decides what the client sees.
import { ServerError, Status, type CallContext, type ServerMiddlewareCall } from "nice-grpc";
import type { Logger } from "../backend/contract";
import { InvalidReferenceError } from "../model/reference";
import { RemovalFailedError, RemovalRefusedError } from "../registry/registry";
import { AmbiguousReferenceError } from "../registry/view";
import { PreloadPullError, RuntimeCallError, RuntimeUnavailableError } from "../runtime/errors";

/** A request whose bytes did not decode; stands in for the request so the middleware can refuse it. */
export class MalformedRequest {
  constructor(
    readonly messageType: string,
    readonly reason: string,
  ) {}
}

/**
 * The same service definition, but a request that does not decode becomes a
 * MalformedRequest value instead of an exception: grpc-js would answer
 * INTERNAL, and a malformed request is the client's error, not ours.
 */
export function withMalformedRequests<D extends Record<string, { path: string; requestDeserialize(b: Uint8Array): unknown }>>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    // "/runtime.v1.ImageService/ImageStatus" → "runtime.v1.ImageStatusRequest"
    const [, service = "", rpc = name] = method.path.split("/");
    const messageType = `${service.slice(0, service.lastIndexOf("."))}.${rpc}Request`;
    out[name] = {
      ...method,
      requestDeserialize(bytes: Uint8Array) {
        try {
          return method.requestDeserialize(bytes);
        } catch (e) {
          return new MalformedRequest(messageType, e instanceof Error ? e.message : String(e));
        }
      },
    };
  }
  return out as D;
}

export function errorMapping(log: Logger) {
  return async function* mapErrors<Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext) {
    if (call.request instanceof MalformedRequest) {
      throw new ServerError(Status.INVALID_ARGUMENT, `malformed ${call.request.messageType}: ${call.request.reason}`);
    }
    try {
      return yield* call.next(call.request, context);
    } catch (e) {
      // A cancelled call is the client going away, not a failure.
      if (e instanceof ServerError || (e instanceof Error && e.name === "AbortError")) throw e;
      if (e instanceof InvalidReferenceError || e instanceof AmbiguousReferenceError) {
        throw new ServerError(Status.INVALID_ARGUMENT, e.message);
      }
      if (e instanceof RemovalRefusedError) throw new ServerError(Status.FAILED_PRECONDITION, e.message);
      // Front mode: the runtime's state and answers, named (src/runtime/).
      if (e instanceof RuntimeUnavailableError || (e instanceof RemovalFailedError && e.cause instanceof RuntimeUnavailableError)) {
        throw new ServerError(Status.UNAVAILABLE, e.message);
      }
      if (e instanceof RuntimeCallError || e instanceof PreloadPullError) throw new ServerError(e.code, e.message);
      // The store's error (a permission, a read-only mount), which the operator must see to fix.
      if (e instanceof RemovalFailedError) throw new ServerError(Status.INTERNAL, e.message);
      // A bug, not bad input: keep the details in the log, not on the wire.
      log.error("internal error", { method: call.method.path, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      throw new ServerError(Status.INTERNAL, "internal error; see the imagelet log");
    }
  };
}
