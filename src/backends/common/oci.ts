// OCI documents (image-spec descriptor.md, manifest.md, image-index.md): media
// types, descriptors, indexes and manifests, and the platform choice in an
// index. Shared by every store that keeps OCI content (an OCI layout
// directory, one inside a tarball, containerd's content store); reading their
// bytes is oci-blobs.ts.
import type { Platform } from "../../backend/contract";
import { isDigest } from "../../model/digest";
import { StoreProblem } from "./files";
import { isRecord } from "../../model/json";

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

/** Config media types of images; a manifest whose config is anything else is an artifact (image-spec 1.1). */
const IMAGE_CONFIG_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.docker.container.image.v1+json",
]);

const INDEX_TYPES: ReadonlySet<string> = new Set([MEDIA.ociIndex, MEDIA.dockerList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MEDIA.ociManifest, MEDIA.dockerManifest]);

/** Nested indexes deeper than this are refused (a cycle would otherwise recurse forever). */
const MAX_INDEX_DEPTH = 8;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface Manifest {
  mediaType?: string;
  /** image-spec 1.1: set on artifact manifests. */
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface IndexDocument {
  mediaType?: string;
  manifests: Descriptor[];
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && INDEX_TYPES.has(mediaType);
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_TYPES.has(mediaType);
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (!isRecord(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === "string") out[k] = x;
  return out;
}

function parsePlatform(v: unknown): Platform | undefined {
  if (!isRecord(v) || typeof v.os !== "string" || typeof v.architecture !== "string") return undefined;
  return { os: v.os, architecture: v.architecture, variant: typeof v.variant === "string" ? v.variant : undefined };
}

/** Parses a descriptor; undefined when it is not one (bad digest, missing size). */
export function parseDescriptor(v: unknown): Descriptor | undefined {
  if (!isRecord(v) || !isDigest(v.digest)) return undefined;
  if (typeof v.size !== "number" || !Number.isSafeInteger(v.size) || v.size < 0) return undefined;
  return {
    mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined,
    digest: v.digest,
    size: v.size,
    annotations: stringMap(v.annotations),
    platform: parsePlatform(v.platform),
  };
}

export function parseIndex(v: unknown, path: string): { index: IndexDocument; invalid: number } {
  if (!isRecord(v) || !Array.isArray(v.manifests)) throw new StoreProblem("not an image index (no manifests array)", path);
  const manifests: Descriptor[] = [];
  let invalid = 0;
  for (const entry of v.manifests) {
    const d = parseDescriptor(entry);
    if (d) manifests.push(d);
    else invalid++;
  }
  return { index: { mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined, manifests }, invalid };
}

export function parseManifest(v: unknown, path: string): Manifest {
  if (!isRecord(v)) throw new StoreProblem("manifest is not an object", path);
  const config = parseDescriptor(v.config);
  if (!config) throw new StoreProblem("manifest has no valid config descriptor", path);
  if (!Array.isArray(v.layers)) throw new StoreProblem("manifest has no layers array", path);
  const layers: Descriptor[] = [];
  for (const l of v.layers) {
    const d = parseDescriptor(l);
    if (!d) throw new StoreProblem("manifest has an invalid layer descriptor", path);
    layers.push(d);
  }
  return {
    mediaType: typeof v.mediaType === "string" ? v.mediaType : undefined,
    artifactType: typeof v.artifactType === "string" ? v.artifactType : undefined,
    config,
    layers,
    annotations: stringMap(v.annotations),
  };
}

/**
 * image-spec 1.1: a manifest is an artifact when it says `artifactType`, or
 * when its config is not an image config (the empty config
 * application/vnd.oci.empty.v1+json most artifacts carry, a Helm chart's).
 * A config without a media type is taken for an image's.
 */
export function isArtifact(manifest: Manifest): boolean {
  if (manifest.artifactType !== undefined) return true;
  const configType = manifest.config.mediaType;
  return configType !== undefined && !IMAGE_CONFIG_TYPES.has(configType);
}

/**
 * Picks the host's manifest from an index: exact os/architecture/variant
 * first, then the same os/architecture when either side leaves the variant
 * out (arm64 is v8 unless it says otherwise). Attestation entries
 * (os "unknown") and unknown media types are never picked.
 */
export function pickPlatform(manifests: readonly Descriptor[], host: Platform): Descriptor | undefined {
  const candidates = manifests.filter(
    (d) => (isManifestType(d.mediaType) || isIndexType(d.mediaType)) && d.platform?.os !== "unknown",
  );
  const variantOf = (p: Platform) => p.variant ?? (p.architecture === "arm64" ? "v8" : undefined);
  const sameArch = candidates.filter((d) => d.platform?.os === host.os && d.platform.architecture === host.architecture);
  return (
    sameArch.find((d) => variantOf(d.platform!) === variantOf(host)) ??
    sameArch.find((d) => d.platform!.variant === undefined || host.variant === undefined) ??
    // An index entry with no platform at all is taken only when nothing says otherwise.
    (candidates.length === 1 && candidates[0]!.platform === undefined ? candidates[0] : undefined)
  );
}

export { MAX_INDEX_DEPTH };
