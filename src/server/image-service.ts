// runtime.v1.ImageService handlers. Each is a few lines: read the request,
// ask the registry's current view, convert. Resolution lives in the view,
// conversion in cri/convert, error mapping in errors.ts.
import { ServerError, Status, type ServiceImplementation } from "nice-grpc";
import { IMAGE_NOT_FOUND, encodeStreamBatches, encodedAnswers, toCriImage, verboseInfo } from "../cri/convert";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import type { BackendRegistry } from "../registry/registry";

export type ImageService = ServiceImplementation<typeof ImageServiceDefinition>;

const PRELOAD_HINT =
  "imagelet serves the images already on this device and does not pull or remove; " +
  "preload images into a configured store instead (for example `skopeo copy docker://REF oci:/var/lib/imagelet/oci:TAG`)";

export function createImageService(registry: BackendRegistry): ImageService {
  return {
    async listImages(request) {
      const view = registry.view;
      const filter = request.filter?.image?.image;
      if (!filter) return encodedAnswers(view).listImages();
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

    async imageFsInfo() {
      throw new ServerError(Status.UNIMPLEMENTED, "ImageFsInfo is not implemented yet");
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
