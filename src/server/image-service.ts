// runtime.v1.ImageService handlers. Each is a few lines: read the request,
// ask the registry's current view, convert. Resolution lives in the view,
// conversion in cri/convert, error mapping in errors.ts.
import { ServerError, Status, type ServiceImplementation } from "nice-grpc";
import { IMAGE_NOT_FOUND, encodeStreamBatches, encodedAnswers, toCriImage, toFilesystemUsage, verboseInfo } from "../cri/convert";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import type { Logger } from "../backend/contract";
import type { RegistryReader } from "../registry/served";

export type ImageService = ServiceImplementation<typeof ImageServiceDefinition>;

const PRELOAD_HINT =
  "imagelet serves the images already on this device and does not pull or remove; " +
  "preload images into a configured store instead (for example `skopeo copy docker://REF oci:/var/lib/imagelet/oci:TAG`)";

/** kubelet's CRI client refuses answers above this (k8s.io/cri-client MaxMsgSize). */
export const KUBELET_MAX_RECEIVE_BYTES = 16 * 1024 * 1024;

export function createImageService(registry: RegistryReader, log: Logger): ImageService {
  let warnedBigList = false;
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

    async imageStatus(request) {
      const view = registry.view;
      const image = view.resolve(request.image?.image ?? "");
      // Embedded images have no OCI config or registry manifest: iSulad does not serve their status.
      if (!image || image.kind === "embedded") return IMAGE_NOT_FOUND;
      if (!request.verbose) return encodedAnswers(view).imageStatus(image);
      return { image: toCriImage(image, true), info: verboseInfo(await registry.detail(image)) };
    },

    async pullImage() {
      throw new ServerError(Status.UNIMPLEMENTED, `PullImage: ${PRELOAD_HINT}`);
    },

    async removeImage() {
      throw new ServerError(Status.UNIMPLEMENTED, `RemoveImage: ${PRELOAD_HINT}`);
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
