// Which gRPC services imagelet serves, with their implementations. serve.ts
// decides how connections reach them; this file decides what they answer.
import type { CompatServiceDefinition } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { DiagnosticsDefinition } from "../gen/imagelet-v1-services";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import { ImageServiceDefinition as V1alpha2ImageServiceDefinition } from "../gen/runtime-v1alpha2-services";
import type { Logger } from "../backend/contract";
import type { RefusedPlugin } from "../plugins/load";
import type { ServedRegistry } from "../registry/served";
import { withMalformedRequests } from "./errors";
import { createImageService } from "./image-service";
import { LazyServerReflectionService, lazyServerReflection } from "./reflection";

export interface ServedService {
  definition: CompatServiceDefinition;
  implementation: object;
}

const IMAGE_SERVICES = ["runtime.v1.ImageService", "runtime.v1alpha2.ImageService"];

/**
 * gRPC health: SERVING ("healthy") once every configured backend has listed
 * successfully at least once, for the server ("") and each image service.
 */
function healthFrom(registry: ServedRegistry): HealthState {
  const state = HealthState();
  const update = () => {
    const status = registry.allLoadedOnce() ? "healthy" : "unhealthy";
    for (const service of ["", ...IMAGE_SERVICES]) state.setStatus(status, service);
  };
  update();
  registry.onHealthChange(update);
  return state;
}

/** imagelet.v1.Diagnostics: what `imagelet plugins` prints, as the running server sees it. */
function diagnostics(registry: ServedRegistry, refusedPlugins: () => readonly RefusedPlugin[]) {
  return {
    backends: () => ({ json: JSON.stringify({ backends: registry.health(), refused: refusedPlugins() }) }),
  };
}

export function servedServices(registry: ServedRegistry, log: Logger, refusedPlugins: () => readonly RefusedPlugin[] = () => []): ServedService[] {
  const imageService = createImageService(registry, log);
  return [
    { definition: withMalformedRequests(ImageServiceDefinition), implementation: imageService },
    // runtime.v1alpha2's image messages carry the same fields under the same
    // names and numbers as v1's (test_v1alpha2.py checks the answers), so the
    // v1 handlers serve them; their v1 answers, some already encoded, are
    // valid v1alpha2 bytes. StreamImages has no v1alpha2 method and is not bound.
    { definition: withMalformedRequests(V1alpha2ImageServiceDefinition), implementation: imageService },
    { definition: HealthDefinition, implementation: HealthServiceImpl(healthFrom(registry)) },
    // Reflection describes the services whose protos are in proto/ (the health
    // package ships no descriptor; health clients such as grpc_health_probe need none).
    { definition: DiagnosticsDefinition, implementation: diagnostics(registry, refusedPlugins) },
    // Loaded on its first call (see reflection.ts), with the descriptors.
    {
      definition: LazyServerReflectionService,
      implementation: lazyServerReflection(() => (require("../gen/protoset") as typeof import("../gen/protoset")).SERVED_PROTOSET, [...IMAGE_SERVICES, "imagelet.v1.Diagnostics"]),
    },
  ];
}
