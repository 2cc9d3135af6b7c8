// Backend for a containers/storage store: what CRI-O, Podman and Buildah
// write under /var/lib/containers/storage. Reads <driver>-images/images.json,
// each image's stored manifest and config (big-data files), and
// <driver>-layers/layers.json for sizes; never layer contents, never the
// store's locks. See docs/backends.md#containers-storage for the rules.
import { resolve } from "node:path";
import { BACKEND_API_VERSION, OptionError, defineBackend } from "../../backend/contract";
import { quote } from "../../model/reference";
import { ContainersStore } from "./store";

/** c/storage graph drivers whose names may prefix <driver>-images. */
const DRIVER_NAME = /^[a-z][a-z0-9_]*$/;

export default defineBackend({
  name: "containers-storage",
  apiVersion: BACKEND_API_VERSION,
  description: "containers/storage (CRI-O, Podman, Buildah)",
  options: {
    path: { type: "string", required: true, description: "Store root (graphroot), usually /var/lib/containers/storage" },
    driver: {
      type: "string",
      description: "Graph driver whose <driver>-images to read (default: detected; overlay first when several exist)",
    },
  },
  create(options, ctx) {
    if (options.driver !== undefined && !DRIVER_NAME.test(options.driver)) {
      throw new OptionError("driver", `driver ${quote(options.driver)} is not a graph driver name`);
    }
    return new ContainersStore(resolve(ctx.baseDir, options.path), options.driver, ctx);
  },
});

export { ContainersStore };
