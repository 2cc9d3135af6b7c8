// The mirror's content hook for a store that keeps each blob whole in its
// own file, under <root>/blobs/<alg>/<encoded>: an OCI layout directory and
// containerd's content store. Both keep the registry's bytes, so content is
// served as stored, from the file: the mirror lets the OS send it.
import type { ContentBody, ContentDescriptor } from "../../backend/contract";
import { isDigest } from "../../model/digest";
import type { ProblemLog } from "./files";
import { blobFile, readJsonBlob } from "./oci-blobs";
import { reachableContent } from "./oci-reach";

export class BlobStoreContent {
  /** By image ID, the top-level descriptors of a listed image (what its names resolve to). */
  private roots: ReadonlyMap<string, readonly ContentDescriptor[]> = new Map();
  /** What each image reaches, made when the mirror first asks for it. */
  private reached = new Map<string, Map<string, ContentDescriptor>>();

  constructor(
    private readonly root: string,
    private readonly problems: ProblemLog,
  ) {}

  /** The images were listed again: these are their roots, and what they reach is found again when asked. */
  listed(roots: ReadonlyMap<string, readonly ContentDescriptor[]>): void {
    this.roots = roots;
    this.reached = new Map();
  }

  /**
   * A blob reachable from image `id`'s roots, as its file. Undefined for a
   * digest that is malformed or not reachable, and for a blob that is
   * missing, not a regular file inside the store, or of another length than
   * its descriptor's (logged once with its path).
   */
  content(id: string, digest: string): ContentBody | undefined {
    if (!isDigest(digest)) return undefined;
    const descriptor = this.reach(id)?.get(digest);
    if (!descriptor) return undefined;
    try {
      const { path, size } = blobFile(this.root, digest, descriptor.size);
      return { mediaType: descriptor.mediaType, size, file: { path, offset: 0 } };
    } catch (e) {
      this.problems.skip(e, `blob for the mirror (image ${id})`);
      return undefined;
    }
  }

  private reach(id: string): Map<string, ContentDescriptor> | undefined {
    let reached = this.reached.get(id);
    if (reached) return reached;
    const roots = this.roots.get(id);
    if (!roots) return undefined;
    reached = reachableContent(roots, (digest) => readJsonBlob(this.root, digest).value);
    this.reached.set(id, reached);
    return reached;
  }
}
