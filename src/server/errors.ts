// Domain errors → gRPC status, in one place. Handlers throw what the model
// throws; this middleware decides what the client sees.
import { ServerError, Status, type CallContext, type ServerMiddlewareCall } from "nice-grpc";
import type { Logger } from "../backend/contract";
import { InvalidReferenceError } from "../model/reference";
import { AmbiguousReferenceError } from "../registry/view";

export function errorMapping(log: Logger) {
  return async function* mapErrors<Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext) {
    try {
      return yield* call.next(call.request, context);
    } catch (e) {
      // A cancelled call is the client going away, not a failure.
      if (e instanceof ServerError || (e instanceof Error && e.name === "AbortError")) throw e;
      if (e instanceof InvalidReferenceError || e instanceof AmbiguousReferenceError) {
        throw new ServerError(Status.INVALID_ARGUMENT, e.message);
      }
      // A bug, not bad input: keep the details in the log, not on the wire.
      log.error("internal error", { method: call.method.path, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      throw new ServerError(Status.INTERNAL, "internal error; see the imagelet log");
    }
  };
}
