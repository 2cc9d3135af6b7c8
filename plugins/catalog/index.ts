// catalog: a module plugin that serves images described by a catalog file
// (TOML or JSON), each with its OCI image config on disk. A vendor's update
// agent that unpacks images its own way can write the catalog next to the
// configs and let kubelet see the images, without an OCI layout.
//
//   [[image]]
//   config = "configs/agent.json"               # relative to the catalog
//   tags = ["vendor.example/edge/agent:2.1"]
//   digests = ["vendor.example/edge/agent@sha256:…"]   # optional
//   size = 1048576                              # optional: bytes (default: the config's)
//   layers = ["layers/agent.tar"]               # optional: uncompressed layer tars, in order
//
// The image ID is the sha256 of the config file, as for any OCI image, so it
// matches what other tools say about the same image.
//
// An image with `layers` is also served by imagelet's registry mirror (the
// `content` hook, docs/mirror.md): its manifest is one this plugin writes
// (an OCI manifest naming the config and each tar by its sha256), and the
// config and layers are sent from their files.
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, readSync, statSync, watch } from "node:fs";
import { dirname, resolve } from "node:path";
import { defineBackend, OptionError, type ContentBody, type ImageRecord } from "./imagelet-plugin.ts";

interface CatalogEntry {
  config: string;
  tags?: string[];
  digests?: string[];
  size?: number;
  layers?: string[];
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar";

/** What the mirror may read of one image: every digest reachable from its manifest. */
interface Servable {
  manifest: { digest: string; bytes: Uint8Array };
  /** digest → the file holding it and its media type. */
  files: Map<string, { path: string; size: number; mediaType: string }>;
}

const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/** A file's sha256, read 1 MiB at a time: a layer tar can be large. */
function fileSha256(path: string): string {
  const hash = createHash("sha256");
  const buffer = Buffer.alloc(1 << 20);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buffer)) > 0; ) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return `sha256:${hash.digest("hex")}`;
}

/** The parts of an OCI image config this plugin passes on. */
interface OciConfig {
  created?: string;
  os?: string;
  architecture?: string;
  variant?: string;
  config?: { User?: string; Labels?: Record<string, string> };
}

/** The catalog's `image` entries (`[[image]]` in TOML, `{"image": [...]}` in JSON). */
function parseCatalog(path: string): CatalogEntry[] {
  const text = readFileSync(path, "utf8");
  let data: { image?: unknown };
  try {
    data = path.endsWith(".json") ? JSON.parse(text) : Bun.TOML.parse(text);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  const images = data.image ?? [];
  if (!Array.isArray(images)) throw new Error(`${path}: "image" is not a list of tables`);
  return images.map((entry, i) => {
    if (typeof entry?.config !== "string") throw new Error(`${path}: image ${i} has no "config" path`);
    return entry as CatalogEntry;
  });
}

export default defineBackend({
  name: "catalog",
  description: "Images listed in a TOML or JSON catalog, with their OCI configs on disk",
  options: {
    path: { type: "string", required: true, description: "The catalog file (.toml or .json)" },
  },
  create(options, ctx) {
    const catalog = resolve(ctx.baseDir, options.path);
    if (!/\.(toml|json)$/.test(catalog)) throw new OptionError("path", `${catalog} is not a .toml or .json file`);
    const skipped = new Set<string>();
    /** Layer digests by path, with the size and mtime they were taken at: a tar is hashed once, not on every list. */
    const layerDigests = new Map<string, { stamp: string; digest: string }>();
    /** The images the last list() made servable, by ID. */
    let servable = new Map<string, Servable>();

    const layerFile = (path: string) => {
      const st = statSync(path);
      const stamp = `${st.size}:${st.mtimeMs}`;
      let known = layerDigests.get(path);
      if (known?.stamp !== stamp) layerDigests.set(path, (known = { stamp, digest: fileSha256(path) }));
      return { path, size: st.size, digest: known.digest };
    };

    /** The manifest this plugin writes for an image with layers: the config and each tar, in order. */
    const servableOf = (configPath: string, config: Uint8Array, entry: CatalogEntry): Servable | undefined => {
      if (!entry.layers || entry.layers.length === 0) return undefined;
      const layers = entry.layers.map((l) => layerFile(resolve(dirname(catalog), l)));
      const document = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
        layers: layers.map((l) => ({ mediaType: OCI_LAYER_TAR, digest: l.digest, size: l.size })),
      };
      const bytes = Buffer.from(JSON.stringify(document));
      const files = new Map([[sha256(config), { path: configPath, size: config.length, mediaType: OCI_CONFIG }]]);
      for (const l of layers) files.set(l.digest, { path: l.path, size: l.size, mediaType: OCI_LAYER_TAR });
      return { manifest: { digest: sha256(bytes), bytes }, files };
    };

    const toRecord = (entry: CatalogEntry, served: Map<string, Servable>): ImageRecord[] => {
      const path = resolve(dirname(catalog), entry.config);
      let bytes: Buffer;
      let config: OciConfig;
      let content: Servable | undefined;
      try {
        bytes = readFileSync(path);
        config = JSON.parse(bytes.toString("utf8")) as OciConfig;
        content = servableOf(path, bytes, entry);
      } catch (e) {
        // One bad image must not hide the others: skip it, and say so once.
        if (!skipped.has(path)) ctx.log.warn("image skipped: its config cannot be read", { path, error: (e as Error).message });
        skipped.add(path);
        return [];
      }
      skipped.delete(path);
      const id = sha256(bytes);
      if (content) served.set(id, content);
      return [{
        id,
        repoTags: entry.tags ?? [],
        repoDigests: entry.digests ?? [],
        size: entry.size ?? bytes.length,
        user: config.config?.User,
        created: config.created,
        labels: config.config?.Labels,
        platform: config.os && config.architecture ? { os: config.os, architecture: config.architecture, variant: config.variant } : undefined,
        config,
        kind: "oci",
        source: path,
        target: content && { mediaType: OCI_MANIFEST, digest: content.manifest.digest, size: content.manifest.bytes.length },
      }];
    };

    return {
      // A catalog that cannot be parsed throws: imagelet keeps serving the last good list and shows the error.
      list: () => {
        const served = new Map<string, Servable>();
        const records = parseCatalog(catalog).flatMap((entry) => toRecord(entry, served));
        servable = served;
        return records;
      },
      // Only what the image's manifest names: the manifest itself, its config, its layers.
      content(id, digest): ContentBody | undefined {
        const image = servable.get(id);
        if (!image) return undefined;
        if (digest === image.manifest.digest) return { mediaType: OCI_MANIFEST, size: image.manifest.bytes.length, bytes: image.manifest.bytes };
        const file = image.files.get(digest);
        return file && { mediaType: file.mediaType, size: file.size, file: { path: file.path, offset: 0 } };
      },
      watch(onChange) {
        // The directory, not the file: agents replace a catalog by renaming a new one over it.
        const watcher = watch(dirname(catalog), () => onChange());
        return () => watcher.close();
      },
    };
  },
});
