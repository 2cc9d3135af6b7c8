// What the mirror may serve for one image of a store that keeps OCI content:
// every descriptor its target reaches (the index, each child manifest that
// the store has, whatever the platform, nested indexes, and each manifest's
// config and layers, an artifact's blobs too). Nothing else of the store is
// ever served under that image's name. Shared by the OCI layout, archive and
// containerd backends, which differ only in how they read a JSON blob.
import type { ContentDescriptor } from "../../backend/contract";
import { isDigest } from "../../model/digest";
import { StoreProblem } from "./files";
import { MAX_INDEX_DEPTH, MEDIA, isIndexType, isManifestType, parseIndex, parseManifest, type Descriptor } from "./oci";

/** The media type of a descriptor that gives none (the spec requires one; an old writer may leave it out). */
const UNKNOWN_TYPE = "application/octet-stream";

/**
 * The common media types as one string each: records keep their target for
 * as long as they are listed, and a large layout has tens of thousands.
 */
const KNOWN_TYPES = new Map<string, string>(Object.values(MEDIA).map((t) => [t, t]));

/** A descriptor as the mirror names content: with its media type, even when the store left it out. */
export function contentDescriptor(d: Descriptor): ContentDescriptor {
  const mediaType = d.mediaType === undefined ? UNKNOWN_TYPE : (KNOWN_TYPES.get(d.mediaType) ?? d.mediaType);
  return { mediaType, digest: d.digest, size: d.size };
}

/**
 * Every descriptor reachable from `roots` (an image's top-level
 * descriptors), by digest. `readJson` reads and verifies a JSON blob, and
 * throws StoreProblem when it cannot. A root is always in the answer (it is
 * what the image's names stand for; if its blob is gone, serving it fails and
 * says so); a child manifest or index the store does not have (another
 * platform containerd never pulled) is left out, with everything below it.
 * Layers and configs are not opened: whether they are there is the server's
 * question at serve time.
 */
export function reachableContent(roots: readonly ContentDescriptor[], readJson: (digest: string) => unknown): Map<string, ContentDescriptor> {
  const reached = new Map<string, ContentDescriptor>();
  const visit = (d: ContentDescriptor, depth: number, root: boolean): void => {
    if (reached.has(d.digest) || !isDigest(d.digest)) return;
    const document = isIndexType(d.mediaType) || isManifestType(d.mediaType);
    if (!document) {
      reached.set(d.digest, d);
      return;
    }
    let value: unknown;
    try {
      value = readJson(d.digest);
    } catch (e) {
      if (!(e instanceof StoreProblem)) throw e;
      if (root) reached.set(d.digest, d);
      return;
    }
    reached.set(d.digest, d);
    try {
      if (isIndexType(d.mediaType)) {
        // Deeper than this is a cycle or hostile; the listing refuses it too.
        if (depth >= MAX_INDEX_DEPTH) return;
        for (const child of parseIndex(value, d.digest).index.manifests) visit(contentDescriptor(child), depth + 1, false);
      } else {
        const manifest = parseManifest(value, d.digest);
        for (const blob of [manifest.config, ...manifest.layers]) visit(contentDescriptor(blob), depth + 1, false);
      }
    } catch (e) {
      // A document that is not what its media type says: itself served as stored, nothing below it.
      if (!(e instanceof StoreProblem)) throw e;
    }
  };
  for (const root of roots) visit(root, 0, true);
  return reached;
}
