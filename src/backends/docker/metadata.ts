// The files of Docker's classic image store, parsed without touching the
// disk: repositories.json (moby daemon/internal/refstore/store.go), the image
// configs in imagedb (daemon/internal/image/fs.go) and the layer chain IDs
// that name layerdb directories (image-spec identity/chainid.go). See
// docs/backends.md#docker.
import type { Platform } from "../../backend/contract";
import { isImageId, rootfsDiffIds } from "../../model/digest";
import { formatReference, parseDockerRef, quote } from "../../model/reference";
import { configFacts } from "../common/oci-config";
import { StoreProblem } from "../common/files";
import { isRecord } from "../../model/json";

/** The names repositories.json gives one image, normalized. */
export interface ImageNames {
  repoTags: string[];
  repoDigests: string[];
}

export interface Repositories {
  byId: Map<string, ImageNames>;
  /** Entries that could not be used, with why: logged, never fatal. */
  rejected: string[];
}

/**
 * repositories.json: {"Repositories": {repo: {ref: imageID}}}. Docker keeps
 * familiar names (`busybox-alias:mytag`); a `repo@digest` ref is a repo digest
 * (recorded on pull and push), anything else a tag. A file that is not this
 * shape throws: without it no image has a name, so the last good view is
 * better than a store of nameless images.
 */
export function parseRepositories(value: unknown, path: string): Repositories {
  if (!isRecord(value)) throw new StoreProblem("not a JSON object", path);
  const repositories = value.Repositories ?? {};
  if (!isRecord(repositories)) throw new StoreProblem('"Repositories" is not an object', path);
  const byId = new Map<string, ImageNames>();
  const rejected: string[] = [];
  for (const [repo, refs] of Object.entries(repositories)) {
    if (!isRecord(refs)) {
      rejected.push(`repository ${quote(repo)} is not an object`);
      continue;
    }
    for (const [name, id] of Object.entries(refs)) {
      if (!isImageId(id)) {
        rejected.push(`${quote(name)} names ${quote(String(id))}, not an image ID`);
        continue;
      }
      const normalized = normalizeName(name);
      if (typeof normalized !== "object") {
        rejected.push(`${quote(name)} is not a reference: ${normalized}`);
        continue;
      }
      const names = byId.get(id) ?? { repoTags: [], repoDigests: [] };
      byId.set(id, names);
      const list = normalized.digest ? names.repoDigests : names.repoTags;
      if (!list.includes(normalized.text)) list.push(normalized.text);
    }
  }
  return { byId, rejected };
}

/** A repositories.json key in CRI's normalized form, or why it is not a reference. */
function normalizeName(name: string): { text: string; digest: boolean } | string {
  try {
    // Docker never writes name:tag@digest, but if it appears the digest is what identifies the content.
    const ref = parseDockerRef(name);
    return { text: formatReference(ref), digest: ref.digest !== undefined };
  } catch (e) {
    return (e as Error).message;
  }
}

/** What imagelet needs from one image config (the Docker form of the OCI config). */
export interface ImageConfig {
  config: Record<string, unknown>;
  diffIds: string[];
  user?: string;
  labels?: Record<string, string>;
  created?: string;
  platform?: Platform;
}

/** Parses a config from imagedb/content; a config without a valid rootfs cannot be sized and is refused. */
export function parseImageConfig(value: unknown, path: string): ImageConfig {
  if (!isRecord(value)) throw new StoreProblem("image config is not a JSON object", path);
  const diffIds = rootfsDiffIds(value);
  if (typeof diffIds === "string") throw new StoreProblem(diffIds, path);
  return { ...configFacts(value)!, diffIds };
}

/** sha256 hex of some bytes. */

/** layerdb's `size` file: a decimal byte count of the layer's unpacked files. */
export function parseLayerSize(text: string, path: string): number {
  const trimmed = text.trim();
  if (!/^[0-9]{1,15}$/.test(trimmed)) throw new StoreProblem(`layer size ${quote(trimmed)} is not a byte count`, path);
  return Number(trimmed);
}
