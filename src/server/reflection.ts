// gRPC server reflection (grpc.reflection.v1), loaded on its first call.
// nice-grpc-server-reflection brings google-protobuf and decodes the whole
// descriptor set when it is set up: about 2 MiB of a server's start-up memory
// for a service that kubelet never calls (only grpcurl-style tools do; see
// docs/performance.md). The method table is written here so the service can
// be registered without loading the library; the library's own definition
// does the encoding once loaded.
import type { ServiceDefinition } from "nice-grpc";

type ReflectionModule = typeof import("nice-grpc-server-reflection");
type ReflectionImpl = ReturnType<ReflectionModule["ServerReflection"]>;
type Method = ReflectionModule["ServerReflectionService"]["serverReflectionInfo"];

let module: ReflectionModule | undefined;
// A static require inside a function: the bundler keeps the module in the
// binary but runs it only when this is first called.
const load = (): ReflectionModule => (module ??= require("nice-grpc-server-reflection") as ReflectionModule);
const method = (): Method => load().ServerReflectionService.serverReflectionInfo;

export const LazyServerReflectionService = {
  serverReflectionInfo: {
    path: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    requestStream: true,
    responseStream: true,
    requestSerialize: (v: unknown) => method().requestSerialize(v as never),
    requestDeserialize: (b: Uint8Array) => method().requestDeserialize(Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
    responseSerialize: (v: unknown) => method().responseSerialize(v as never),
    responseDeserialize: (b: Uint8Array) => method().responseDeserialize(Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
    options: {},
  },
} as const satisfies ServiceDefinition;

/** The reflection implementation for `services`, set up (descriptors decoded) on the first call. */
export function lazyServerReflection(protoset: () => Uint8Array, services: readonly string[]) {
  let impl: ReflectionImpl | undefined;
  return {
    async *serverReflectionInfo(...args: Parameters<ReflectionImpl["serverReflectionInfo"]>) {
      impl ??= load().ServerReflection(protoset(), [...services]);
      yield* impl.serverReflectionInfo(...args);
    },
  };
}
