// runtime.v1.ImageService handlers. Each is a few lines: read the request,
// ask the registry's current view, convert. Resolution lives in the view,
// conversion in cri/convert, error mapping in errors.ts.
import { ServerError, Status, type ServiceImplementation } from "nice-grpc";
import { IMAGE_NOT_FOUND, encodeStreamBatches, encodedAnswers, toCriImage, toFilesystemUsage, verboseInfo } from "../cri/convert";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import type { Logger } from "../backend/contract";
import { normalizeReference, quote } from "../model/reference";
import type { RegistryReader } from "../registry/served";
import type { Image } from "../model/image";
import { RuntimeUnavailableError } from "../runtime/errors";
import type { FrontRuntime } from "../runtime/preload";

export type ImageService = ServiceImplementation<typeof ImageServiceDefinition>;

/**
 * PullImage of an image that is not on the device. imagelet never contacts a
 * registry (there is no network in its unit), so the message says how to preload.
 */
function notOnDevice(ref: string, embedded: boolean): ServerError {
  let name = "IMAGE";
  try {
    name = normalizeReference(ref);
  } catch {
    // an ID or an ID prefix: the example keeps the placeholder
  }
  if (embedded) {
    return new ServerError(Status.NOT_FOUND, `image ${quote(ref)} is an iSulad embedded image: it has no OCI config and cannot be run through the CRI`);
  }
  return new ServerError(
    Status.NOT_FOUND,
    `image ${quote(ref)} is not on this device; imagelet serves only images already in its stores and does not fetch images from registries. ` +
      `Preload it into a configured store, e.g. \`skopeo copy docker://${name} oci:/var/lib/imagelet/oci:${name}\` ` +
      "or a `docker save` tarball copied into /var/lib/imagelet/archives (see docs/kubelet.md)",
  );
}

/** kubelet's CRI client refuses answers above this (k8s.io/cri-client MaxMsgSize). */
export const KUBELET_MAX_RECEIVE_BYTES = 16 * 1024 * 1024;

export function createImageService(registry: RegistryReader, log: Logger): ImageService {
  let warnedBigList = false;
  /** Runs `call` with front mode's runtime, holding its registry open; undefined when front mode is off. */
  const withFront = <T>(call: (front: FrontRuntime) => Promise<T>): Promise<T> | undefined => {
    return registry.front ? registry.withFront(call) : undefined;
  };
  /**
   * Front mode: a preloaded image is reported only once the runtime holds it
   * (src/runtime/preload.ts). Returns the image as the view now has it (the
   * runtime's names merged in). A runtime that is down leaves the answer to
   * the stores when `serveWhenDown` (ImageStatus: imagelet keeps serving them;
   * kubelet's CreateContainer fails on the runtime anyway, and its retry asks again).
   */
  const heldByRuntime = async (image: Image, ref: string, signal: AbortSignal, serveWhenDown: boolean): Promise<Image> => {
    const ensured = withFront(async (front) => {
      if (!front.preloaded(image)) return;
      try {
        await front.ensure(image, ref, signal);
      } catch (e) {
        if (!(serveWhenDown && e instanceof RuntimeUnavailableError)) throw e;
        log.debug("runtime down: ImageStatus answered from the stores", { image: image.id, error: e.message });
      }
    });
    if (ensured) await ensured;
    return registry.view.getById(image.id) ?? image;
  };
  return {
    async listImages(request) {
      const view = registry.view;
      const filter = request.filter?.image?.image;
      if (!filter) {
        const bytes = encodedAnswers(view).listImages();
        if (bytes.length > KUBELET_MAX_RECEIVE_BYTES && !warnedBigList) {
          warnedBigList = true;
          log.warn("ListImages answer is larger than kubelet accepts; enable kubelet's CRIListStreaming feature gate so it uses StreamImages", {
            bytes: bytes.length,
            limit: KUBELET_MAX_RECEIVE_BYTES,
            images: view.size,
          });
        }
        return bytes;
      }
      return { images: view.filter(filter).map((image) => toCriImage(image)) };
    },

    async imageStatus(request, context) {
      const ref = request.image?.image ?? "";
      const found = registry.view.resolve(ref);
      // Embedded images have no OCI config or registry manifest: iSulad does not serve their status.
      if (!found || found.kind === "embedded") return IMAGE_NOT_FOUND;
      // kubelet's Never policy only ever calls ImageStatus: in front mode this is where the runtime gets the image.
      const image = await heldByRuntime(found, ref, context.signal, true);
      const view = registry.view;
      if (!request.verbose) return encodedAnswers(view).imageStatus(image);
      return { image: toCriImage(image, true), info: verboseInfo(await registry.detail(image), image) };
    },

    // A pull that finds the image on the device: what a runtime answers after
    // pulling it. Auth, the sandbox config and the ImageSpec's runtime_handler
    // are accepted and ignored: nothing is fetched, and one view serves every
    // runtime handler.
    //
    // Front mode: a preloaded image is pulled by the runtime from the mirror
    // (if it lacks it); any other image is the runtime's ordinary pull.
    async pullImage(request, context) {
      const ref = request.image?.image ?? "";
      const image = registry.view.resolve(ref);
      if (image?.kind === "embedded") throw notOnDevice(ref, true);
      // In no store (unknown, or only the runtime's): the runtime's own pull, as without imagelet.
      if (!image || registry.front?.preloaded(image) === false) {
        const forwarded = withFront((front) => front.forward(request, context.signal));
        if (forwarded) return { imageRef: await forwarded };
        throw notOnDevice(ref, false);
      }
      await heldByRuntime(image, ref, context.signal, false);
      return { imageRef: image.id };
    },

    // Every name of the image goes, from every (writable) backend holding it;
    // an image that is not there is no error (the CRI asks for idempotence).
    async removeImage(request) {
      await registry.remove(request.image?.image ?? "");
      return {};
    },

    // One entry per filesystem holding a store, primary first (kubelet reads
    // the first), measured in the background; container_filesystems is left
    // empty, as containerd does: imagelet holds no container layers.
    async imageFsInfo() {
      return { imageFilesystems: toFilesystemUsage(await registry.imageFilesystems()) };
    },

    // The same images and filter as ListImages, in batches; never an empty
    // message; the client cancelling stops the stream between batches.
    async *streamImages(request, context) {
      const view = registry.view;
      const filter = request.filter?.image?.image;
      const batches = filter ? encodeStreamBatches(view.filter(filter)) : encodedAnswers(view).streamImages();
      for (const batch of batches) {
        if (context.signal.aborted) return;
        yield batch;
      }
    },
  };
}
