// Which gRPC services imagelet serves, with their implementations. serve.ts
// decides how connections reach them; this file decides what they answer.
import type { CompatServiceDefinition } from "nice-grpc";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
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
  return [{ definition: withMalformedRequests(ImageServiceDefinition), implementation: imageService }];
}
