// The nice-grpc 2.1.18 internals that grpc-server.ts uses. They are marked
// @internal there, so their published .d.ts files are empty; grpc-server.ts
// gives them one signature (HandlerFactory) where it imports them. nice-grpc
// is pinned to an exact version; a change of these functions fails the
// integration tests, which call every kind of method through them.
declare module "nice-grpc/lib/service-definitions" {
  import type { ServiceDefinition as GrpcJsServiceDefinition } from "@grpc/grpc-js";
  import type { CompatServiceDefinition, ServiceDefinition } from "nice-grpc";
  export function normalizeServiceDefinition(definition: CompatServiceDefinition): ServiceDefinition;
  export function toGrpcJsServiceDefinition(definition: ServiceDefinition): GrpcJsServiceDefinition;
}
declare module "nice-grpc/lib/server/handleUnaryCall";
declare module "nice-grpc/lib/server/handleServerStreamingCall";
declare module "nice-grpc/lib/server/handleClientStreamingCall";
declare module "nice-grpc/lib/server/handleBidiStreamingCall";
