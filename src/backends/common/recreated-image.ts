// An image served on the mirror from a store that keeps no registry manifest
// and no compressed layers (containers/storage, Docker's classic store): the
// manifest is the one imagelet writes (written-manifest.ts), the config is
// the stored file, byte for byte (so the image ID is unchanged), and each
// layer is its uncompressed tar re-created from tar-split (tar-split.ts), so
// its digest is its diff_id. What is common to those stores lives here; each
// backend says where a layer's tar-split and files are.
import { sha256Digest } from "../../model/digest";
import type { ContentBody } from "../../backend/contract";
import { ProblemLog, StoreProblem, readStoreFile } from "./files";
import { layerBody, type LayerSource, type TarSplitSizes } from "./tar-split";
import { OCI_CONFIG, writeManifest, type WrittenManifest } from "./written-manifest";

export interface RecreatedLayer {
  diffId: string;
  /** The uncompressed tar's length, as the store records it (checked against the tar-split when served). */
  size: number;
  /** The store's own name for the layer (c/storage layer ID, Docker chain ID), for `locate`. */
  key: string;
}

export interface RecreatedImage {
  manifest: WrittenManifest;
  config: { digest: string; size: number; path: string };
  /** By diff_id. */
  layers: Map<string, RecreatedLayer>;
}

/** Where a layer's tar-split and files are, or why this store cannot re-create it. */
export type LayerLocation = LayerSource | { reason: string; path: string };

/** The image's written manifest over its stored config and layers (in the config's order). */
export function recreatedImage(config: { digest: string; size: number; path: string }, layers: readonly RecreatedLayer[]): RecreatedImage {
  return {
    manifest: writeManifest(config, layers),
    config,
    layers: new Map(layers.map((l) => [l.diffId, l])),
  };
}

export interface ContentContext {
  storeRoot: string;
  locate(layer: RecreatedLayer): LayerLocation;
  sizes: TarSplitSizes;
  problems: ProblemLog;
  signal: AbortSignal;
}

/**
 * The content hook for such an image: its written manifest, its config or
 * one of its layers; undefined (the mirror's 404) for anything else, and for
 * what cannot be served, with the reason logged once with its path.
 */
export async function recreatedContent(image: RecreatedImage, digest: string, ctx: ContentContext): Promise<ContentBody | undefined> {
  const { manifest, config } = image;
  if (digest === manifest.descriptor.digest) return { mediaType: manifest.descriptor.mediaType, size: manifest.bytes.length, bytes: manifest.bytes };
  try {
    if (digest === config.digest) {
      const bytes = readStoreFile(ctx.storeRoot, config.path);
      const actual = sha256Digest(bytes);
      if (actual !== config.digest) throw new StoreProblem(`config does not match its digest ${config.digest} (sha256 is ${actual})`, config.path);
      return { mediaType: OCI_CONFIG, size: bytes.length, bytes };
    }
    const layer = image.layers.get(digest);
    if (!layer) return undefined;
    const location = ctx.locate(layer);
    if ("reason" in location) throw new StoreProblem(`layer ${layer.diffId} is not served on the mirror: ${location.reason}`, location.path);
    const onFailure = (e: unknown) => {
      if (e instanceof StoreProblem) ctx.problems.report(`layer ${layer.diffId} failed while it was sent: ${e.message}`, e.path);
      else ctx.problems.report(`layer ${layer.diffId} failed while it was sent: ${(e as Error).message}`, location.tarSplit);
    };
    const body = await layerBody(location, ctx.sizes, ctx.signal, onFailure);
    if (body.size !== layer.size) {
      throw new StoreProblem(`layer ${layer.diffId} is not served on the mirror: its tar-split describes ${body.size} bytes, the store records ${layer.size}`, location.tarSplit);
    }
    return body;
  } catch (e) {
    if (!(e instanceof StoreProblem)) throw e;
    ctx.problems.report(e.message, e.path);
    return undefined;
  }
}
