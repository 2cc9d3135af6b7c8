// Where the CLI's answers come from. In-process, `images` and `inspecti` call
// the very handlers the server runs (and encode/decode their answers), so the
// CLI and the socket can never disagree; with --endpoint they are a CRI
// client of any image service.
import { createChannel, createClient, Metadata, type CallContext } from "nice-grpc";
import type { BackendDefinition, Logger } from "../backend/contract";
import type { ImageletConfig } from "../config/config";
import type { runtime } from "../gen/runtime-v1.js";
import { DiagnosticsDefinition } from "../gen/imagelet-v1-services";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import { buildRegistry } from "../registry/build";
import type { BackendHealth, BackendRegistry } from "../registry/registry";
import type { Image } from "../model/image";
import type { RefusedPlugin } from "../plugins/load";
import { createImageService } from "../server/image-service";
import { endpointTarget } from "../runtime/endpoint";

export { endpointTarget };

export type CriImage = runtime.v1.Image;
export type ImageStatusAnswer = runtime.v1.ImageStatusResponse;

export interface ImageSource {
  listImages(filter?: string): Promise<CriImage[]>;
  imageStatus(ref: string, verbose: boolean): Promise<ImageStatusAnswer>;
  /** PullImage: the image's ID (image_ref). */
  pullImage(ref: string): Promise<string>;
  removeImage(ref: string): Promise<void>;
  /** In-process only: lets `inspecti` say why an embedded image has no status. */
  resolveLocal?(ref: string): Image | undefined;
  health?(): BackendHealth[];
  close(): void;
}

const D = ImageServiceDefinition;

/** A call context for invoking handlers directly. */
function localContext(): CallContext {
  return {
    metadata: Metadata(),
    peer: "in-process",
    header: Metadata(),
    trailer: Metadata(),
    signal: new AbortController().signal,
    sendHeader() {},
  } as unknown as CallContext;
}

export async function inProcessSource(
  config: ImageletConfig,
  definitions: readonly BackendDefinition[],
  log: Logger,
): Promise<ImageSource> {
  const registry: BackendRegistry = await buildRegistry(config, definitions, log, { watch: false });
  const service = createImageService(registry, log);
  return {
    async listImages(filter) {
      const response = await service.listImages({ filter: filter ? { image: { image: filter } } : undefined } as never, localContext());
      return D.listImages.responseDeserialize(D.listImages.responseSerialize(response)).images as CriImage[];
    },
    async imageStatus(ref, verbose) {
      const response = await service.imageStatus({ image: { image: ref }, verbose } as never, localContext());
      return D.imageStatus.responseDeserialize(D.imageStatus.responseSerialize(response));
    },
    async pullImage(ref) {
      const response = await service.pullImage({ image: { image: ref } } as never, localContext());
      return D.pullImage.responseDeserialize(D.pullImage.responseSerialize(response)).imageRef;
    },
    async removeImage(ref) {
      await service.removeImage({ image: { image: ref } } as never, localContext());
    },
    resolveLocal: (ref) => {
      try {
        return registry.view.resolve(ref);
      } catch {
        return undefined;
      }
    },
    health: () => registry.health(),
    close: () => void registry.close(),
  };
}

/** What a running imagelet reports of its backends (imagelet.v1.Diagnostics). */
export interface ServerBackends {
  backends: BackendHealth[];
  refused: RefusedPlugin[];
}

/**
 * The backends of the imagelet serving `endpoint`, as it sees them now. Another
 * image service (containerd, CRI-O) answers UNIMPLEMENTED, which the caller reports.
 */
export async function serverBackends(endpoint: string, timeoutMs: number): Promise<ServerBackends> {
  const channel = createChannel(endpointTarget(endpoint));
  try {
    const client = createClient(DiagnosticsDefinition, channel);
    const r = await client.backends({}, { signal: AbortSignal.timeout(timeoutMs) });
    return JSON.parse(r.json) as ServerBackends;
  } finally {
    channel.close();
  }
}

export function remoteSource(endpoint: string, timeoutMs: number): ImageSource {
  const channel = createChannel(endpointTarget(endpoint));
  const client = createClient(ImageServiceDefinition, channel);
  const signal = () => AbortSignal.timeout(timeoutMs);
  return {
    async listImages(filter) {
      const r = await client.listImages({ filter: filter ? { image: { image: filter } } : undefined }, { signal: signal() });
      return r.images as CriImage[];
    },
    async imageStatus(ref, verbose) {
      return (await client.imageStatus({ image: { image: ref }, verbose }, { signal: signal() })) as ImageStatusAnswer;
    },
    async pullImage(ref) {
      return (await client.pullImage({ image: { image: ref } }, { signal: signal() })).imageRef;
    },
    async removeImage(ref) {
      await client.removeImage({ image: { image: ref } }, { signal: signal() });
    },
    close: () => channel.close(),
  };
}
