// The images of an OCI image layout, wherever its blobs live: a layout
// directory (../oci-layout) or a layout inside a tarball (oci-archive, Docker >= 25
// `docker save`; ../archives). Pure interpretation of index.json, nested
// indexes, manifests and configs; reading, caching and watching belong to the
// caller, which hands in a blob reader. See
// docs/backends.md#oci-layout for the naming rules.
import { OptionError, type ContentDescriptor, type ImageRecord, type Logger, type Platform } from "../../backend/contract";
import { isImageId } from "../../model/digest";
import { formatReference, isFullReference, isTag, parseNormalizedNamed, quote, taggedReference } from "../../model/reference";
import { StoreProblem, type ProblemLog } from "./files";
import { configFacts, type ConfigFacts } from "./oci-config";
import {
  MAX_INDEX_DEPTH,
  isArtifact,
  isIndexType,
  isManifestType,
  parseIndex,
  parseManifest,
  pickPlatform,
  type Descriptor,
  type Manifest,
} from "./oci";
import { contentDescriptor } from "./oci-reach";

const CONTAINERD_IMAGE_NAME = "io.containerd.image.name";
const OCI_REF_NAME = "org.opencontainers.image.ref.name";

/** A parsed JSON blob and its length in bytes, already checked against its digest. */
export interface Blob {
  value: unknown;
  size: number;
}

/** Where a layout's images are read from, and how they are named. */
export interface LayoutSource {
  /** Repository for ref.name values that are bare tags. */
  repository: string;
  platform: Platform;
  problems: ProblemLog;
  log: Logger;
  backend: string;
  /** The store path that records and problem reports name (layout directory or tarball). */
  path: string;
  /** Reads a JSON blob by a digest that isDigest() accepted; throws StoreProblem when it cannot. */
  blob(digest: string): Blob;
  /**
   * Optional: keeps what was made of a blob (`derive`: its facts as a
   * manifest, index or config) across scans, in place of the blob. A source that has it serves
   * the raw config from disk when asked (verbose ImageStatus), so records
   * from it carry none: parsed configs were most of a large layout's memory.
   */
  remember?<T>(digest: string, what: string, derive: () => T): T;
}

/** What a manifest contributes to its image's record. */
interface ManifestFacts {
  /** The manifest's own digest: an artifact's ID. */
  digest: string;
  /** An OCI artifact (see isArtifact): identified by its manifest, not its config. */
  artifact: boolean;
  /** The parsed manifest, for an artifact's verbose ImageStatus; left out by a source that remembers (status() reads it again). */
  raw?: unknown;
  configDigest: string;
  configSize: number;
  /** The manifest's own size plus its layers' (descriptor sizes). */
  ownAndLayersSize: number;
  annotations?: Record<string, string>;
}

/** What one index.json entry resolves to on this host. */
interface ResolvedEntry {
  manifest: ManifestFacts;
  platform?: Platform;
}

function remembered<T>(src: LayoutSource, digest: string, what: string, derive: () => T): T {
  return src.remember ? src.remember(digest, what, derive) : derive();
}

function manifestFacts(manifest: Manifest, size: number, digest: string, raw: unknown): ManifestFacts {
  const artifact = isArtifact(manifest);
  return {
    digest,
    artifact,
    raw: artifact ? raw : undefined,
    configDigest: manifest.config.digest,
    configSize: manifest.config.size,
    ownAndLayersSize: size + manifest.layers.reduce((n, l) => n + l.size, 0),
    annotations: manifest.annotations,
  };
}

/** A config's facts; `config` (the raw config) is left out by a source that remembers. */
type ParsedConfig = Omit<ConfigFacts, "config"> & { config?: ConfigFacts["config"] };

/** Checks a `repository` option value: a repository name without tag or digest, normalized. */
export function repositoryOption(repo: string, key = "repository"): string {
  try {
    const ref = parseNormalizedNamed(repo);
    if (ref.tag !== undefined || ref.digest !== undefined) throw new Error("has a tag or digest");
    return ref.repository;
  } catch (e) {
    throw new OptionError(key, `repository ${quote(repo)} is not a repository name: ${(e as Error).message}`);
  }
}

/** A layout's images, and the index.json entries each stands for (what the mirror may serve under it). */
export interface LayoutImages {
  records: ImageRecord[];
  /** False when an entry was skipped for a problem that may go away (a blob not there yet). */
  complete: boolean;
  /** By image ID: the descriptors of its index.json entries, as stored; the record's target is the first. */
  roots: Map<string, ContentDescriptor[]>;
}

/** The images an index.json names. */
export function layoutImages(indexValue: unknown, indexPath: string, src: LayoutSource): LayoutImages {
  const { index, invalid } = parseIndex(indexValue, indexPath);
  if (invalid > 0) src.problems.report(`${invalid} index.json entries are not valid descriptors (bad digest or size)`, indexPath);
  let complete = true;
  const byId = new Map<string, ImageRecord>();
  const roots = new Map<string, ContentDescriptor[]>();
  for (const entry of index.manifests) {
    let resolved: ResolvedEntry | undefined;
    try {
      resolved = resolveEntry(src, entry, 0);
    } catch (e) {
      complete = false;
      src.problems.skip(e, `entry ${entry.digest}`);
      continue;
    }
    if (!resolved) continue;
    const target = contentDescriptor(entry);
    const record = toRecord(src, entry, resolved, target);
    if (!record) continue;
    const existing = byId.get(record.id);
    if (!existing) byId.set(record.id, record);
    else mergeNames(existing, record);
    const entryRoots = roots.get(record.id) ?? [];
    if (!entryRoots.some((d) => d.digest === entry.digest)) entryRoots.push(target);
    roots.set(record.id, entryRoots);
  }
  return { records: [...byId.values()], complete, roots };
}

/** Adds `from`'s tags and digests to `into` (several entries, or tarballs, for one image). */
export function mergeNames(into: ImageRecord, from: ImageRecord): void {
  for (const t of from.repoTags) if (!into.repoTags.includes(t)) into.repoTags.push(t);
  for (const d of from.repoDigests) if (!into.repoDigests.includes(d)) into.repoDigests.push(d);
}

/** Follows nested indexes down to the host platform's manifest. */
function resolveEntry(src: LayoutSource, d: Descriptor, depth: number): ResolvedEntry | undefined {
  if (isManifestType(d.mediaType)) {
    const manifest = remembered(src, d.digest, "manifest", () => {
      const { value, size } = src.blob(d.digest);
      return manifestFacts(parseManifest(value, d.digest), size, d.digest, src.remember ? undefined : value);
    });
    return { manifest, platform: d.platform };
  }
  if (isIndexType(d.mediaType)) {
    if (depth >= MAX_INDEX_DEPTH) throw new StoreProblem(`indexes nested deeper than ${MAX_INDEX_DEPTH}`, d.digest);
    const index = remembered(src, d.digest, "index", () => parseIndex(src.blob(d.digest).value, d.digest).index);
    const child = pickPlatform(index.manifests, src.platform);
    if (!child) {
      src.log.debug("index has no manifest for this platform", { backend: src.backend, digest: d.digest });
      return undefined;
    }
    return resolveEntry(src, child, depth + 1);
  }
  // Unknown media types (artifacts, attestations) must not cause errors.
  return undefined;
}

/** The image facts of an OCI/Docker image config (also used for docker-archive configs). */
export const parseConfig = configFacts;

function configOf(src: LayoutSource, digest: string): ParsedConfig | undefined {
  try {
    if (!src.remember) return parseConfig(src.blob(digest).value);
    return src.remember(digest, "config", () => {
      const facts = parseConfig(src.blob(digest).value);
      return facts && { user: facts.user, labels: facts.labels, created: facts.created, platform: facts.platform };
    });
  } catch (e) {
    if (!(e instanceof StoreProblem)) throw e;
    src.problems.report(`config unavailable, listed without it: ${e.message}`, e.path);
    return undefined;
  }
}

/**
 * The ID of an image: its config digest (containerd's); of an artifact: its
 * manifest digest (CRI-O's), since artifacts share the one empty config and
 * would otherwise all be one image.
 */
function idOf(manifest: ManifestFacts): string {
  return manifest.artifact ? manifest.digest : manifest.configDigest;
}

/**
 * The image ID an index.json entry stands for on this host (what
 * layoutImages lists it under), or undefined when it stands for none; throws
 * StoreProblem when a blob it needs cannot be read.
 */
export function entryImageId(src: LayoutSource, entry: Descriptor): string | undefined {
  const resolved = resolveEntry(src, entry, 0);
  return resolved && idOf(resolved.manifest);
}

function toRecord(src: LayoutSource, entry: Descriptor, { manifest, platform }: ResolvedEntry, target: ContentDescriptor): ImageRecord | undefined {
  const id = idOf(manifest);
  if (!isImageId(id)) {
    src.problems.report(`entry ${entry.digest} skipped: ${manifest.artifact ? "manifest" : "config"} digest ${id} is not sha256`, src.path);
    return undefined;
  }
  const repoTags = namesOf(src, entry);
  const repositories = [...new Set(repoTags.map((t) => parseNormalizedNamed(t).repository))];
  if (manifest.artifact) {
    return {
      id,
      repoTags,
      repoDigests: repositories.map((repository) => formatReference({ repository, digest: entry.digest })),
      size: manifest.ownAndLayersSize + manifest.configSize,
      annotations: manifest.annotations,
      platform,
      manifest: manifest.raw,
      kind: "artifact",
      source: src.path,
      target,
    };
  }
  const config = configOf(src, id);
  const size = manifest.ownAndLayersSize + manifest.configSize;
  return {
    id,
    repoTags,
    repoDigests: repositories.map((repository) => formatReference({ repository, digest: entry.digest })),
    size,
    user: config?.user,
    created: config?.created,
    labels: config?.labels,
    annotations: manifest.annotations,
    platform: platform ?? config?.platform,
    config: config?.config,
    kind: "oci",
    source: src.path,
    target,
  };
}

/**
 * The tags of an index.json entry: io.containerd.image.name, else a
 * ref.name that is a full reference, else ref.name as a tag of the
 * configured repository (docs/backends.md#oci-layout).
 */
function namesOf(src: LayoutSource, entry: Descriptor): string[] {
  const annotations = entry.annotations ?? {};
  const containerdName = annotations[CONTAINERD_IMAGE_NAME];
  if (containerdName !== undefined) {
    const tag = tagOf(containerdName);
    if (tag) return [tag];
    src.problems.report(`entry ${entry.digest}: ${CONTAINERD_IMAGE_NAME} ${quote(containerdName)} is not a reference`, src.path);
  }
  const refName = annotations[OCI_REF_NAME];
  if (refName === undefined) return [];
  if (isFullReference(refName)) {
    const tag = tagOf(refName);
    if (tag) return [tag];
  }
  if (isTag(refName)) return [`${src.repository}:${refName}`];
  src.problems.report(`entry ${entry.digest}: ${OCI_REF_NAME} ${quote(refName)} is neither a reference nor a tag`, src.path);
  return [];
}

/** A reference as a normalized `repository:tag` (`latest` when it has none); undefined when it is not one. */
export function tagOf(name: string): string | undefined {
  try {
    const ref = parseNormalizedNamed(name);
    if (ref.digest !== undefined && ref.tag === undefined) return undefined;
    return taggedReference(ref);
  } catch {
    return undefined;
  }
}
