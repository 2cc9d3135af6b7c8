// Types for the nice-grpc 2.1.18 internals that grpc-server.ts uses (marked
// @internal there, so their published .d.ts files are empty). nice-grpc is
// pinned to an exact version; a change of these signatures fails the
// integration tests, which call every kind of method through them.
declare module "nice-grpc/lib/service-definitions" {
  import type { ServiceDefinition as GrpcJsServiceDefinition } from "@grpc/grpc-js";
  import type { CompatServiceDefinition, ServiceDefinition } from "nice-grpc";
  export function normalizeServiceDefinition(definition: CompatServiceDefinition): ServiceDefinition;
  export function toGrpcJsServiceDefinition(definition: ServiceDefinition): GrpcJsServiceDefinition;
}


declare module "nice-grpc/lib/server/handleUnaryCall" {
  import type { UntypedHandleCall } from "@grpc/grpc-js";
  import type { MethodDefinition, ServerMiddleware } from "nice-grpc";
  export function createUnaryMethodHandler(
    definition: MethodDefinition<unknown, unknown, unknown, unknown>,
    implementation: (request: unknown, context: unknown) => unknown,
    middleware: ServerMiddleware | undefined,
  ): UntypedHandleCall;
}

declare module "nice-grpc/lib/server/handleServerStreamingCall" {
  import type { UntypedHandleCall } from "@grpc/grpc-js";
  import type { MethodDefinition, ServerMiddleware } from "nice-grpc";
  export function createServerStreamingMethodHandler(
    definition: MethodDefinition<unknown, unknown, unknown, unknown>,
    implementation: (request: unknown, context: unknown) => unknown,
    middleware: ServerMiddleware | undefined,
  ): UntypedHandleCall;
}

declare module "nice-grpc/lib/server/handleClientStreamingCall" {
  import type { UntypedHandleCall } from "@grpc/grpc-js";
  import type { MethodDefinition, ServerMiddleware } from "nice-grpc";
  export function createClientStreamingMethodHandler(
    definition: MethodDefinition<unknown, unknown, unknown, unknown>,
    implementation: (request: unknown, context: unknown) => unknown,
    middleware: ServerMiddleware | undefined,
  ): UntypedHandleCall;
}

declare module "nice-grpc/lib/server/handleBidiStreamingCall" {
  import type { UntypedHandleCall } from "@grpc/grpc-js";
  import type { MethodDefinition, ServerMiddleware } from "nice-grpc";
  export function createBidiStreamingMethodHandler(
    definition: MethodDefinition<unknown, unknown, unknown, unknown>,
    implementation: (request: unknown, context: unknown) => unknown,
    middleware: ServerMiddleware | undefined,
  ): UntypedHandleCall;
}
