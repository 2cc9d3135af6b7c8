// The gRPC server without a listening socket of its own: connections are
// accepted by listener.ts and handed in through grpc-js's connection injector.
//
// Why not nice-grpc's createServer(): it creates its grpc-js Server inside
// listen() and never exposes it, and listen() only binds addresses itself, so
// there is no way to give it a connection that imagelet accepted (needed to
// rewrite old clients' `:authority`, and for systemd's inherited socket).
// Instead this builds the grpc-js Server directly and registers each method
// through nice-grpc's own handler factories, the same calls nice-grpc's
// listen() makes (nice-grpc 2.1.18 is pinned exactly; see
// nice-grpc-internals.d.ts), so handlers, middleware, cancellation and error
// mapping behave exactly as with createServer(). The other options were worse:
// patching grpc-js's Server.prototype.bindAsync to capture the instance touches
// a shared prototype, and relaying through an internal socket doubles every hop.
import { Server, ServerCredentials, type ChannelOptions, type UntypedHandleCall } from "@grpc/grpc-js";
import type { EventEmitter } from "node:events";
import type { ServerHttp2Session } from "node:http2";
import type { Duplex } from "node:stream";
import type { Logger } from "../backend/contract";
import {
  composeServerMiddleware,
  type CallContext,
  type CompatServiceDefinition,
  type MethodDefinition,
  type ServerMiddleware,
  type ServerMiddlewareCall,
} from "nice-grpc";
import { createBidiStreamingMethodHandler } from "nice-grpc/lib/server/handleBidiStreamingCall";
import { createClientStreamingMethodHandler } from "nice-grpc/lib/server/handleClientStreamingCall";
import { createServerStreamingMethodHandler } from "nice-grpc/lib/server/handleServerStreamingCall";
import { createUnaryMethodHandler } from "nice-grpc/lib/server/handleUnaryCall";
import { normalizeServiceDefinition, toGrpcJsServiceDefinition } from "nice-grpc/lib/service-definitions";
import { boundCompletions } from "./completion-depth";
import { FLUSH_GRACE_MS } from "./listener";
import { sessionEndsWithGoaway } from "./session-end";
import { StreamWatch } from "./stream-watch";

export interface ServiceRegistration {
  definition: CompatServiceDefinition;
  implementation: object;
}

export interface InjectableGrpcServer {
  /** Serves HTTP/2 on a connection accepted elsewhere. */
  inject(connection: Duplex): void;
  /** Lets the calls in flight now finish, then closes every connection (GOAWAY); resolves when all are closed. */
  shutdown(): Promise<void>;
  forceShutdown(): void;
}

type AnyMethod = MethodDefinition<unknown, unknown, unknown, unknown>;
/** What each of nice-grpc's create*MethodHandler functions is. */
type HandlerFactory = (
  definition: AnyMethod,
  implementation: (request: unknown, context: unknown) => unknown,
  middleware: ServerMiddleware | undefined,
) => UntypedHandleCall;

function handlerFactory(method: AnyMethod): HandlerFactory {
  if (method.requestStream) return method.responseStream ? createBidiStreamingMethodHandler : createClientStreamingMethodHandler;
  return method.responseStream ? createServerStreamingMethodHandler : createUnaryMethodHandler;
}

/**
 * The HTTP/2 servers behind grpc-js's connection injectors: its private
 * `http2Servers` map (grpc-js 1.14, pinned by the lockfile), the only way to
 * reach the streams before grpc-js does. Fails loudly at start-up if a
 * grpc-js upgrade moved it, rather than serving without the guard.
 */
function http2ServersOf(server: Server): EventEmitter[] {
  const servers: unknown = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) throw new Error("grpc-js has no http2Servers map: completion-depth.ts needs updating");
  return [...(servers as Map<EventEmitter, unknown>).keys()];
}

function methodImplementation(implementation: object, name: string): (request: unknown, context: unknown) => unknown {
  const fn: unknown = (implementation as Record<string, unknown>)[name];
  if (typeof fn !== "function") throw new Error(`service implementation has no method ${name}`);
  return fn.bind(implementation) as (request: unknown, context: unknown) => unknown;
}

export interface StreamLimits {
  /** A request incomplete and without a DATA frame for this long closes its connection (stream-watch.ts). */
  stalledRequestMs: number;
}

export function createInjectableGrpcServer(
  options: ChannelOptions,
  middleware: ServerMiddleware,
  services: readonly ServiceRegistration[],
  limits: StreamLimits,
  log: Logger,
): InjectableGrpcServer {
  const server = new Server(options);
  // Calls in flight, each as a promise that settles when the call ends. grpc-js's
  // graceful close cannot be relied on for this: under Bun, closing an HTTP/2
  // session that runs over an injected stream cuts its open streams.
  const inFlight = new Set<Promise<void>>();
  const begin = (): (() => void) => {
    let done!: () => void;
    const ended = new Promise<void>((resolve) => (done = resolve));
    inFlight.add(ended);
    return () => {
      inFlight.delete(ended);
      done();
    };
  };
  // A unary call ends when nice-grpc hands grpc-js its answer: tracked by
  // wrapping that callback, so the per-call path has no extra middleware layer
  // (each nice-grpc middleware is an async generator the call passes through).
  const trackUnary = (handle: UntypedHandleCall): UntypedHandleCall =>
    ((call: unknown, callback: (...args: unknown[]) => void) => {
      const end = begin();
      (handle as (call: unknown, callback: (...args: unknown[]) => void) => void)(call, (...args) => {
        end();
        callback(...args);
      });
    }) as UntypedHandleCall;
  async function* tracked<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    const end = begin();
    try {
      return yield* call.next(call.request, context);
    } finally {
      end();
    }
  }
  const streamingMiddleware = composeServerMiddleware(tracked, middleware);
  for (const { definition, implementation } of services) {
    const normalized = normalizeServiceDefinition(definition);
    const handlers: Record<string, UntypedHandleCall> = {};
    for (const [name, method] of Object.entries(normalized)) {
      const unary = !method.requestStream && !method.responseStream;
      const handle = handlerFactory(method)(method, methodImplementation(implementation, name), unary ? middleware : streamingMiddleware);
      handlers[name] = unary ? trackUnary(handle) : handle;
    }
    server.addService(toGrpcJsServiceDefinition(normalized), handlers);
  }
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  // The connection being injected: its HTTP/2 session is made (and announced) synchronously.
  let injecting: Duplex | undefined;
  const streams = new StreamWatch(limits.stalledRequestMs, log);
  let warned = false;
  for (const http2Server of http2ServersOf(server)) {
    http2Server.prependListener("stream", streams.add);
    // Each stream's completions are bounded before grpc-js sees the stream (completion-depth.ts).
    http2Server.prependListener("stream", boundCompletions);
    http2Server.prependListener("session", (session: ServerHttp2Session) => {
      if (injecting === undefined || sessionEndsWithGoaway(session, injecting, FLUSH_GRACE_MS) || warned) return;
      warned = true;
      log.error("Bun's HTTP/2 session changed: connections it ends may lose their GOAWAY (src/server/session-end.ts needs updating)");
    });
  }
  return {
    inject: (connection) => {
      injecting = connection;
      try {
        injector.injectConnection(connection);
      } finally {
        injecting = undefined;
      }
    },
    shutdown: async () => {
      await Promise.allSettled([...inFlight]);
      await new Promise<void>((resolve, reject) => server.tryShutdown((err) => (err ? reject(err) : resolve())));
    },
    forceShutdown: () => server.forceShutdown(),
  };
}
