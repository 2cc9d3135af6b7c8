// containerd's images as containerd's CRI plugin shows them, from the image
// records of meta.db (metadata.ts) and the content store
// (io.containerd.content.v1.content/blobs/<alg>/<hex>). The rules, with where
// containerd has them (internal/cri in 2.x, pkg/cri in 1.6):
//
// - One CRI image per config digest: every name whose target resolves to the
//   same config is one image (store/image/image.go `add` merges references).
// - A target that is an index is followed to the host platform's manifest
//   with containerd 1.6's own matcher (platformEntries below), not the OCI
//   layout's: attestation entries (unknown/unknown) never match. No match, a manifest or config blob that is not there, or a
//   media type that is not an image: containerd cannot load the image and
//   leaves it out (its getImage fails); so do we, with a log line.
// - ID = the config digest.
// - repo tags and repo digests from the names (util/references.go
//   ParseImageReferences): a `name@digest` name is a repo digest, a tagged
//   name a tag, normalized; anything else (containerd's own `sha256:<id>`
//   names, a bare repository) is neither.
// - Size: the sum of the descriptor sizes of the target, each index on the
//   way, the chosen manifest, its config and its layers. containerd 2.x:
//   store/image/image.go getImage calls usage.CalculateImageUsage(…,
//   WithManifestLimit(platform, 1), WithManifestUsage()), which with
//   manifestOnly adds `desc.Size` of every descriptor walked; 1.6:
//   images.Image.Size, the same walk adding `desc.Size`. It is the
//   compressed content size, not the unpacked snapshot size: neither version
//   asks the snapshotter (WithSnapshotters is not passed). Layers need not be
//   present (--no-unpack imports of one platform, content GC'd).
// - Pinned: the image label io.cri-containerd.pinned=pinned on any of its
//   names (labels.PinnedImageLabelKey/Value, containerd >= 1.7).
// - uid/username from the config's User (the registry applies the CRI rule).
//
// Content is verified against its digest and read bounded and inside the
// content store, as for an OCI layout (common/files.ts, common/oci-blobs.ts).
import { existsSync } from "node:fs";
import type { ContentDescriptor, ImageRecord, Logger, Platform } from "../../backend/contract";
import { isDigest, isImageId } from "../../model/digest";
import { formatReference, parseNormalizedNamed, quote } from "../../model/reference";
import { ProblemLog, ScanPaths, StoreProblem } from "../common/files";
import { configFacts } from "../common/oci-config";
import { MAX_INDEX_DEPTH, isIndexType, isManifestType, parseIndex, parseManifest } from "../common/oci";
import { blobPath, readJsonBlob } from "../common/oci-blobs";
import { readGoTime } from "./bbolt";
import { ContentReader } from "./content";
import type { ImageEntry } from "./metadata";

export const PINNED_LABEL = "io.cri-containerd.pinned";
export const PINNED_VALUE = "pinned";

/** What one name's target resolves to on this host. */
interface Resolved {
  configDigest: string;
  /** Σ descriptor sizes along the walk (see the top of this file). */
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

/** What a manifest contributes; kept by digest across scans (content-addressed, so never stale). */
interface ManifestFacts {
  configDigest: string;
  configSize: number;
  layersSize: number;
  annotations?: Record<string, string>;
}

interface ConfigSummary {
  user?: string;
  labels?: Record<string, string>;
  created?: string;
  platform?: Platform;
}

/** containerd ParseImageReferences: a name is a repo digest, a tag, or neither. */
export function classifyName(name: string): { tag?: string; digest?: string } {
  // ParseAnyReference reads a bare digest or 64 hex as an ID reference: neither tag nor digest.
  if (isDigest(name) || /^[a-f0-9]{64}$/.test(name)) return {};
  let ref;
  try {
    ref = parseNormalizedNamed(name);
  } catch {
    return {};
  }
  if (ref.digest !== undefined) return { digest: formatReference({ repository: ref.repository, digest: ref.digest }) };
  if (ref.tag !== undefined) return { tag: formatReference({ repository: ref.repository, tag: ref.tag }) };
  return {};
}

/** containerd platforms.Normalize (1.6 platforms/database.go): GOOS/GOARCH spellings, default variants. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  switch (architecture) {
    case "i386":
      architecture = "386";
      variant = undefined;
      break;
    case "x86_64":
    case "x86-64":
    case "amd64":
      architecture = "amd64";
      if (variant === "v1") variant = undefined;
      break;
    case "aarch64":
    case "arm64":
      architecture = "arm64";
      if (variant === "8" || variant === "v8") variant = undefined;
      break;
    case "armhf":
      architecture = "arm";
      variant = "v7";
      break;
    case "armel":
      architecture = "arm";
      variant = "v6";
      break;
    case "arm":
      if (variant === undefined) variant = "v7";
      else if (/^[5-8]$/.test(variant)) variant = `v${variant}`;
      break;
  }
  return { os, architecture, variant };
}

/** containerd platforms.Only's vector (1.6 platforms/compare.go platformVector): what a host runs, best first. */
function platformVector(p: Platform): Platform[] {
  const out = [p];
  if (p.architecture === "amd64") out.push({ ...p, architecture: "386" });
  else if (p.architecture === "arm") {
    const v = Number(p.variant?.replace(/^v/, ""));
    for (let n = v - 1; Number.isInteger(v) && n >= 5; n--) out.push({ ...p, variant: `v${n}` });
  } else if (p.architecture === "arm64") out.push(...platformVector({ ...p, architecture: "arm", variant: p.variant ?? "v8" }));
  return out;
}

/**
 * The entries of an index containerd 1.6's CRI would take on `host`, best
 * first (images.Manifest and LimitManifests with platforms.Only(host)): an
 * entry whose normalized platform is in the host's vector (amd64 also runs
 * 386; arm64 also arm v8 to v5), ordered by that vector; an entry with no
 * platform is kept, after all of those (containerd then checks its config).
 */
export function platformEntries<D extends { mediaType?: string; platform?: Platform }>(manifests: readonly D[], host: Platform): D[] {
  const vector = platformVector(normalizePlatform(host));
  const rank = (d: D): number => {
    if (d.platform === undefined) return vector.length;
    const n = normalizePlatform(d.platform);
    return vector.findIndex((v) => v.os === n.os && v.architecture === n.architecture && v.variant === n.variant);
  };
  return manifests
    .filter((d) => isManifestType(d.mediaType ?? "") || isIndexType(d.mediaType ?? ""))
    .map((d) => ({ d, r: rank(d) }))
    .filter((x) => x.r >= 0)
    .sort((a, b) => a.r - b.r) // stable: the index's order among equals, as sort.SliceStable
    .map((x) => x.d);
}

export interface ImageSource {
  /** The content store root (…/io.containerd.content.v1.content). */
  contentRoot: string;
  platform: Platform;
  problems: ProblemLog;
  log: Logger;
  backend: string;
  /** meta.db, named as records' source. */
  metaPath: string;
  /** Names that are neither tags nor digests here, though their image is listed (Docker's `moby-dangling@…`). */
  ignoreName?: (name: string) => boolean;
}

export class ContainerdImages {
  /** Facts of blobs by `<what> <digest>`; only those used by the last scan are kept. */
  private facts = new Map<string, unknown>();
  private touched = new Map<string, unknown>();
  private content: ContentReader;
  /** Whether the content store may have lost blobs since the facts were made. */
  private recheck = true;
  /** By image ID, the targets of all its names (the last images() call's): what the mirror may serve under it. */
  roots = new Map<string, ContentDescriptor[]>();

  constructor(private readonly src: ImageSource) {
    this.content = new ContentReader(src.contentRoot, new ScanPaths(src.contentRoot));
  }

  /**
   * The CRI images of these records. `contentChanged`: blobs may have come or
   * gone since the last call, so remembered facts are checked against the
   * disk again.
   */
  images(entries: readonly ImageEntry[], contentChanged: boolean): ImageRecord[] {
    this.touched = new Map();
    this.recheck = contentChanged;
    this.content = new ContentReader(this.src.contentRoot, new ScanPaths(this.src.contentRoot));
    const byId = new Map<string, { record: ImageRecord; pinned: boolean }>();
    const roots = new Map<string, ContentDescriptor[]>();
    for (const entry of entries) {
      if (entry.problem !== undefined || entry.target === undefined) {
        this.src.problems.report(`image ${quote(entry.name)} skipped: ${entry.problem ?? "no target"}`, this.src.metaPath);
        continue;
      }
      let resolved: Resolved | string;
      try {
        resolved = this.resolve(entry.target.digest, entry.target.mediaType, entry.target.size, undefined, 0);
      } catch (e) {
        if (!(e instanceof StoreProblem)) throw e;
        this.src.problems.report(`image ${quote(entry.name)} skipped: ${e.message}`, e.path);
        continue;
      }
      if (typeof resolved === "string") {
        this.src.problems.report(`image ${quote(entry.name)} skipped: ${resolved}`, this.src.metaPath);
        continue;
      }
      // An ignored name still lists its image (Docker's dangling images are listed untagged).
      const names = this.src.ignoreName?.(entry.name) ? {} : classifyName(entry.name);
      const pinned = entry.labels[PINNED_LABEL] === PINNED_VALUE;
      const existing = byId.get(resolved.configDigest);
      if (existing) {
        // containerd keeps the first reference's size; names are merged (store/image/image.go add).
        if (names.tag && !existing.record.repoTags.includes(names.tag)) existing.record.repoTags.push(names.tag);
        if (names.digest && !existing.record.repoDigests.includes(names.digest)) existing.record.repoDigests.push(names.digest);
        existing.pinned ||= pinned;
        const targets = roots.get(resolved.configDigest)!;
        if (!targets.some((t) => t.digest === entry.target!.digest)) targets.push({ ...entry.target });
        continue;
      }
      let config: ConfigSummary | undefined;
      try {
        config = this.config(resolved.configDigest);
      } catch (e) {
        if (!(e instanceof StoreProblem)) throw e;
        this.src.problems.report(`image ${quote(entry.name)} skipped: ${e.message}`, e.path);
        continue;
      }
      roots.set(resolved.configDigest, [{ ...entry.target }]);
      byId.set(resolved.configDigest, {
        pinned,
        record: {
          id: resolved.configDigest,
          repoTags: names.tag ? [names.tag] : [],
          repoDigests: names.digest ? [names.digest] : [],
          size: resolved.size,
          user: config.user,
          // The config's time, as every backend reports it; the record's own when the config has none.
          created: config.created ?? (entry.createdAt && readGoTime(entry.createdAt)),
          labels: config.labels,
          annotations: resolved.annotations,
          platform: resolved.platform ?? config.platform,
          kind: "oci",
          source: this.src.metaPath,
          // The first name's target, as containerd keeps it: what the mirror serves by tag.
          target: { ...entry.target },
        },
      });
    }
    this.facts = this.touched;
    this.roots = roots;
    const records: ImageRecord[] = [];
    for (const { record, pinned } of byId.values()) {
      record.repoTags.sort();
      record.repoDigests.sort();
      if (pinned) record.pinned = true;
      records.push(record);
    }
    return records;
  }

  /** Reads a config again, whole, for verbose ImageStatus. */
  rawConfig(digest: string): Record<string, unknown> | undefined {
    return configFacts(readJsonBlob(this.src.contentRoot, digest).value)?.config;
  }

  /**
   * Walks a descriptor to its image. Returns why it is no image for this host
   * (a string), or throws StoreProblem for content that is missing or bad.
   */
  private resolve(digest: string, mediaType: string, size: number, platform: Platform | undefined, depth: number): Resolved | string {
    if (!isDigest(digest)) return `target digest ${quote(digest)} is not a digest`;
    if (isManifestType(mediaType)) {
      const m = this.remember(digest, "manifest", () => {
        const manifest = parseManifest(this.content.json(digest).value, blobPath(this.src.contentRoot, digest));
        return {
          configDigest: manifest.config.digest,
          configSize: manifest.config.size,
          layersSize: manifest.layers.reduce((n, l) => n + l.size, 0),
          annotations: manifest.annotations,
        } satisfies ManifestFacts;
      });
      if (!isImageId(m.configDigest)) return `config digest ${m.configDigest} is not sha256`;
      return { configDigest: m.configDigest, size: size + m.configSize + m.layersSize, platform, annotations: m.annotations };
    }
    if (isIndexType(mediaType)) {
      if (depth >= MAX_INDEX_DEPTH) throw new StoreProblem(`indexes nested deeper than ${MAX_INDEX_DEPTH}`, blobPath(this.src.contentRoot, digest));
      const index = this.remember(digest, "index", () => parseIndex(this.content.json(digest).value, blobPath(this.src.contentRoot, digest)).index);
      for (const child of platformEntries(index.manifests, this.src.platform)) {
        const inner = this.resolve(child.digest, child.mediaType ?? "", child.size, child.platform, depth + 1);
        if (typeof inner === "string") return inner;
        // An entry without a platform is the host's only if its config says so (images.Manifest reads it).
        if (child.platform === undefined && isManifestType(child.mediaType ?? "")) {
          const p = this.config(inner.configDigest).platform;
          if (p === undefined || platformEntries([{ mediaType: child.mediaType, platform: p }], this.src.platform).length === 0) continue;
        }
        return { ...inner, size: size + inner.size };
      }
      const host = this.src.platform;
      return `index ${digest} has no manifest for ${host.os}/${host.architecture}${host.variant ? `/${host.variant}` : ""}`;
    }
    return `target media type ${quote(mediaType)} is not an image manifest or index`;
  }

  private config(digest: string): ConfigSummary {
    return this.remember(digest, "config", () => {
      const facts = configFacts(this.content.json(digest).value);
      if (!facts) throw new StoreProblem("config is not a JSON object", blobPath(this.src.contentRoot, digest));
      return { user: facts.user, labels: facts.labels, created: facts.created, platform: facts.platform } satisfies ConfigSummary;
    });
  }

  private remember<T>(digest: string, what: string, derive: () => T): T {
    const key = `${what} ${digest}`;
    if (this.touched.has(key)) return this.touched.get(key) as T;
    // A blob deleted since is a broken image (containerd would not load it either): check when the store changed.
    const known = this.facts.has(key) && (!this.recheck || existsSync(blobPath(this.src.contentRoot, digest)));
    let value: T;
    try {
      value = known ? (this.facts.get(key) as T) : derive();
    } catch (e) {
      if (e instanceof StoreProblem) throw new StoreProblem(`${what} ${digest}: ${e.message}`, e.path);
      throw e;
    }
    this.touched.set(key, value);
    return value;
  }
}
