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
import { coalescedCollection } from "./collection";
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

/**
 * A full collection a moment after each new view, the first scan's included.
 * A scan leaves its garbage (every blob read and parsed, index.json's text)
 * in a heap that JavaScriptCore would otherwise collect only when later calls
 * grow it, and the steady RSS kept it (10,000 images: about 10 MiB; see
 * docs/performance.md). At most one per COLLECT_AFTER_VIEW_MS however often
 * the stores change; never while nothing changes, so idle costs nothing.
 */
const COLLECT_AFTER_VIEW_MS = 3000;

function collectAfterViewChanges(served: ServedRegistry): void {
  const schedule = coalescedCollection(COLLECT_AFTER_VIEW_MS);
  schedule();
  // A reload's new registry is a new view too: the subscription follows it.
  served.onViewChange(schedule);
}

export function servedServices(registry: ServedRegistry, log: Logger, refusedPlugins: () => readonly RefusedPlugin[] = () => []): ServedService[] {
  const imageService = createImageService(registry, log);
  collectAfterViewChanges(registry);
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
