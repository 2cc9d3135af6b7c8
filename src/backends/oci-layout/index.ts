// Backend for an OCI image layout directory (`oci:` in skopeo's terms, what
// umoci and `buildah manifest push oci:` write). See
// ../shared/docs/reference-image-stores.md §1 for the naming rules.
import { statSync, watch } from "node:fs";
import { basename, join, resolve } from "node:path";
import {
  BACKEND_API_VERSION,
  OptionError,
  defineBackend,
  type BackendContext,
  type ImageRecord,
  type Platform,
} from "../../backend/contract";
import { isImageId } from "../../model/digest";
import { formatReference, isFullReference, isTag, parseNormalizedNamed, quote } from "../../model/reference";
import { ProblemLog, StoreProblem, readStoreJson } from "../common/files";
import {
  MAX_INDEX_DEPTH,
  isIndexType,
  isManifestType,
  parseIndex,
  parseManifest,
  pickPlatform,
  readJsonBlob,
  type Descriptor,
  type Manifest,
} from "./layout";

const CONTAINERD_IMAGE_NAME = "io.containerd.image.name";
const OCI_REF_NAME = "org.opencontainers.image.ref.name";

/** What one index.json entry resolves to on this host. */
interface ResolvedEntry {
  manifest: Manifest;
  manifestSize: number;
  platform?: Platform;
}

interface ParsedConfig {
  config: Record<string, unknown>;
  user?: string;
  labels?: Record<string, string>;
  created?: string;
  platform?: Platform;
}

export default defineBackend({
  name: "oci-layout",
  apiVersion: BACKEND_API_VERSION,
  description: "An OCI image layout directory (oci-layout, index.json, blobs/)",
  options: {
    path: { type: "string", required: true, description: "The layout directory" },
    repository: {
      type: "string",
      description: "Repository for ref.name values that are bare tags (default localhost/<directory name>)",
    },
  },
  create(options, ctx) {
    return new OciLayoutStore(resolve(ctx.baseDir, options.path), options.repository, ctx);
  },
});

export class OciLayoutStore {
  private readonly repository: string;
  /** Parsed blobs by digest: content-addressed, so never stale. */
  private blobs = new Map<string, { value: unknown; size: number }>();
  /** Blobs used by the scan in progress; the cache keeps only these afterwards. */
  private touched = new Map<string, { value: unknown; size: number }>();
  private cached?: { key: string; records: ImageRecord[] };
  private readonly problems: ProblemLog;

  constructor(
    readonly root: string,
    repository: string | undefined,
    private readonly ctx: BackendContext,
  ) {
    this.problems = new ProblemLog(ctx.log, ctx.name);
    const repo = repository ?? `localhost/${basename(root).toLowerCase()}`;
    try {
      const ref = parseNormalizedNamed(repo);
      if (ref.tag !== undefined || ref.digest !== undefined) throw new Error("has a tag or digest");
      this.repository = ref.repository;
    } catch (e) {
      throw new OptionError("repository", `repository ${quote(repo)} is not a repository name: ${(e as Error).message}`);
    }
  }

  list(): ImageRecord[] {
    const indexPath = join(this.root, "index.json");
    let key: string;
    try {
      const st = statSync(indexPath);
      key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (e) {
      throw new StoreProblem(`no index.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, indexPath);
    }
    // index.json is the layout's commit point: unchanged file, unchanged images.
    if (this.cached?.key === key) return this.cached.records;
    this.touched = new Map();
    const { records, complete } = this.scan(indexPath);
    // Drop blobs of images that left the layout, so churn cannot grow memory.
    this.blobs = this.touched;
    // A scan that skipped a missing blob is retried next time, since the blob may yet arrive.
    this.cached = complete ? { key, records } : undefined;
    return records;
  }

  status(id: string): ImageRecord | undefined {
    return this.cached?.records.find((r) => r.id === id);
  }

  watch(onChange: () => void): () => void {
    // index.json is replaced by rename or rewritten in place; both show as
    // events on the directory. The registry's poll interval covers the
    // directory itself being removed and recreated.
    const watcher = watch(this.root, { persistent: false }, () => onChange());
    watcher.on("error", (e) => this.problems.report(`watch failed: ${e.message}`, this.root));
    return () => watcher.close();
  }

  private scan(indexPath: string): { records: ImageRecord[]; complete: boolean } {
    const { index, invalid } = parseIndex(readStoreJson(this.root, indexPath).value, indexPath);
    if (invalid > 0) this.problems.report(`${invalid} index.json entries are not valid descriptors (bad digest or size)`, indexPath);
    let complete = true;
    const byId = new Map<string, ImageRecord>();
    for (const entry of index.manifests) {
      let resolved: ResolvedEntry | undefined;
      try {
        resolved = this.resolveEntry(entry, 0);
      } catch (e) {
        complete = false;
        this.problems.skip(e, `entry ${entry.digest}`);
        continue;
      }
      if (!resolved) continue;
      const record = this.toRecord(entry, resolved);
      if (!record) continue;
      const existing = byId.get(record.id);
      if (!existing) byId.set(record.id, record);
      else {
        // Several index.json entries for one image (umoci writes one per tag).
        for (const t of record.repoTags) if (!existing.repoTags.includes(t)) existing.repoTags.push(t);
        for (const d of record.repoDigests) if (!existing.repoDigests.includes(d)) existing.repoDigests.push(d);
      }
    }
    return { records: [...byId.values()], complete };
  }

  private blob(digest: string): { value: unknown; size: number } {
    let b = this.touched.get(digest) ?? this.blobs.get(digest);
    if (!b) b = readJsonBlob(this.root, digest);
    this.touched.set(digest, b);
    return b;
  }

  /** Follows nested indexes down to the host platform's manifest. */
  private resolveEntry(d: Descriptor, depth: number): ResolvedEntry | undefined {
    if (isManifestType(d.mediaType)) {
      const { value, size } = this.blob(d.digest);
      return { manifest: parseManifest(value, d.digest), manifestSize: size, platform: d.platform };
    }
    if (isIndexType(d.mediaType)) {
      if (depth >= MAX_INDEX_DEPTH) throw new StoreProblem(`indexes nested deeper than ${MAX_INDEX_DEPTH}`, d.digest);
      const { index } = parseIndex(this.blob(d.digest).value, d.digest);
      const child = pickPlatform(index.manifests, this.ctx.platform);
      if (!child) {
        this.ctx.log.debug("index has no manifest for this platform", { backend: this.ctx.name, digest: d.digest });
        return undefined;
      }
      return this.resolveEntry(child, depth + 1);
    }
    // Unknown media types (artifacts, attestations) must not cause errors.
    return undefined;
  }

  private parsedConfig(digest: string): ParsedConfig | undefined {
    let value: unknown;
    try {
      value = this.blob(digest).value;
    } catch (e) {
      if (!(e instanceof StoreProblem)) throw e;
      this.problems.report(`config unavailable, listed without it: ${e.message}`, e.path);
      return undefined;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    const config = value as Record<string, unknown>;
    const inner = (typeof config.config === "object" && config.config !== null ? config.config : {}) as Record<string, unknown>;
    const labels =
      typeof inner.Labels === "object" && inner.Labels !== null
        ? Object.fromEntries(Object.entries(inner.Labels).filter((e): e is [string, string] => typeof e[1] === "string"))
        : undefined;
    return {
      config,
      user: typeof inner.User === "string" ? inner.User : undefined,
      labels,
      created: typeof config.created === "string" ? config.created : undefined,
      platform:
        typeof config.os === "string" && typeof config.architecture === "string"
          ? { os: config.os, architecture: config.architecture, variant: typeof config.variant === "string" ? config.variant : undefined }
          : undefined,
    };
  }

  private toRecord(entry: Descriptor, { manifest, manifestSize, platform }: ResolvedEntry): ImageRecord | undefined {
    const id = manifest.config.digest;
    if (!isImageId(id)) {
      this.problems.report(`entry ${entry.digest} skipped: config digest ${id} is not sha256`, this.root);
      return undefined;
    }
    const repoTags = this.namesOf(entry);
    const repositories = [...new Set(repoTags.map((t) => parseNormalizedNamed(t).repository))];
    const config = this.parsedConfig(id);
    const size = manifestSize + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
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
      source: this.root,
    };
  }

  /**
   * The tags of an index.json entry: io.containerd.image.name, else a
   * ref.name that is a full reference, else ref.name as a tag of the
   * configured repository (reference-image-stores.md §1).
   */
  private namesOf(entry: Descriptor): string[] {
    const annotations = entry.annotations ?? {};
    const containerdName = annotations[CONTAINERD_IMAGE_NAME];
    if (containerdName !== undefined) {
      const tag = this.tagOf(containerdName);
      if (tag) return [tag];
      this.problems.report(`entry ${entry.digest}: ${CONTAINERD_IMAGE_NAME} ${quote(containerdName)} is not a reference`, this.root);
    }
    const refName = annotations[OCI_REF_NAME];
    if (refName === undefined) return [];
    if (isFullReference(refName)) {
      const tag = this.tagOf(refName);
      if (tag) return [tag];
    }
    if (isTag(refName)) return [`${this.repository}:${refName}`];
    this.problems.report(`entry ${entry.digest}: ${OCI_REF_NAME} ${quote(refName)} is neither a reference nor a tag`, this.root);
    return [];
  }

  private tagOf(name: string): string | undefined {
    try {
      const ref = parseNormalizedNamed(name);
      if (ref.digest !== undefined && ref.tag === undefined) return undefined;
      return formatReference({ repository: ref.repository, tag: ref.tag ?? "latest" });
    } catch {
      return undefined;
    }
  }
}
