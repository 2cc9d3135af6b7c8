// Which gRPC services imagelet serves, with their implementations. serve.ts
// decides how connections reach them; this file decides what they answer.
import type { CompatServiceDefinition } from "nice-grpc";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import { ImageServiceDefinition as V1alpha2ImageServiceDefinition } from "../gen/runtime-v1alpha2-services";
import type { Logger } from "../backend/contract";
import type { BackendRegistry } from "../registry/registry";
import { withMalformedRequests } from "./errors";
import { createImageService } from "./image-service";

export interface ServedService {
  definition: CompatServiceDefinition;
  implementation: object;
}

export function servedServices(registry: BackendRegistry, log: Logger): ServedService[] {
  const imageService = createImageService(registry, log);
  return [
    { definition: withMalformedRequests(ImageServiceDefinition), implementation: imageService },
    // runtime.v1alpha2's image messages carry the same fields under the same
    // names and numbers as v1's (test_v1alpha2.py checks the answers), so the
    // v1 handlers serve them; their v1 answers, some already encoded, are
    // valid v1alpha2 bytes. StreamImages has no v1alpha2 method and is not bound.
    { definition: withMalformedRequests(V1alpha2ImageServiceDefinition), implementation: imageService },
  ];
}
