// The manifest imagelet writes for an image whose store kept no servable one
// (docker-archive tarballs, containers/storage, Docker's classic store): the
// stores keep the config bytes and each layer's uncompressed tar (or enough to
// re-create it), but not the registry's manifest and compressed layers. The
// rule is one and fixed, so the same image always gets the same manifest
// digest, from any store that holds it (docs/mirror.md, "Manifests imagelet
// writes"):
//
//   - an OCI image manifest (schemaVersion 2, its mediaType set);
//   - the config as stored, described as an OCI image config (the bytes, and
//     so the image ID, are unchanged: a media type is only a label);
//   - one uncompressed OCI layer per diff_id, in the config's order, whose
//     digest is the diff_id and whose size is the tar's length;
//   - serialized by JSON.stringify in exactly this key order, no white space.
//
// No annotations and no created time: nothing that differs between two
// stores holding the same image may enter the bytes.
//
// The repo digests the CRI reports for such an image name this manifest and
// nothing else (writtenRepoDigests below), so what ListImages says is there
// is what the mirror serves.
import { sha256Digest } from "../../model/digest";
import type { ContentDescriptor } from "../../backend/contract";
import { formatReference, parseNormalizedNamed } from "../../model/reference";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar";

export interface WrittenManifest {
  bytes: Buffer;
  descriptor: ContentDescriptor;
}

/**
 * The manifest for a config (its digest and length) and its layers (each
 * diff_id with the uncompressed tar's length), in the config's order.
 */
export function writeManifest(config: { digest: string; size: number }, layers: readonly { diffId: string; size: number }[]): WrittenManifest {
  const document = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER_TAR, digest: l.diffId, size: l.size })),
  };
  const bytes = Buffer.from(JSON.stringify(document));
  const digest = sha256Digest(bytes);
  return { bytes, descriptor: { mediaType: OCI_MANIFEST, digest, size: bytes.length } };
}

/**
 * The CRI repo digests of an image a backend serves through its written
 * manifest (docs/mirror.md, "Manifests imagelet writes"):
 * `<repository>@<written manifest digest>` for every repository the image is
 * named in, by a tag or by a repo digest its store records; sorted, no
 * repeats. The store's own repo digests (the registry's manifest or index,
 * recorded at pull) are not reported: the node no longer has the compressed
 * layers they name, so no runtime could pull them from the device, and
 * kubelet would take a pod pinned to one for present. CRI-O and Docker do
 * report them: they never have to serve them. Without a written manifest
 * (the image cannot be served) there are none.
 *
 * `names` are the image's references as its store records them; one that is
 * not a reference is left out (the backend has reported it already).
 */
export function writtenRepoDigests(names: Iterable<string>, manifest: ContentDescriptor | undefined): string[] {
  if (manifest === undefined) return [];
  const out = new Set<string>();
  for (const name of names) {
    let repository: string;
    try {
      repository = parseNormalizedNamed(name).repository;
    } catch {
      continue;
    }
    out.add(formatReference({ repository, digest: manifest.digest }));
  }
  return [...out].sort();
}
