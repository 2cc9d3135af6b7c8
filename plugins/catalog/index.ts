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
//
// The image ID is the sha256 of the config file, as for any OCI image, so it
// matches what other tools say about the same image.
import { createHash } from "node:crypto";
import { readFileSync, watch } from "node:fs";
import { dirname, resolve } from "node:path";
import { defineBackend, OptionError, type ImageRecord } from "./imagelet-plugin.ts";

interface CatalogEntry {
  config: string;
  tags?: string[];
  digests?: string[];
  size?: number;
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

    const toRecord = (entry: CatalogEntry): ImageRecord[] => {
      const path = resolve(dirname(catalog), entry.config);
      let bytes: Buffer;
      let config: OciConfig;
      try {
        bytes = readFileSync(path);
        config = JSON.parse(bytes.toString("utf8")) as OciConfig;
      } catch (e) {
        // One bad image must not hide the others: skip it, and say so once.
        if (!skipped.has(path)) ctx.log.warn("image skipped: its config cannot be read", { path, error: (e as Error).message });
        skipped.add(path);
        return [];
      }
      skipped.delete(path);
      return [{
        id: `sha256:${createHash("sha256").update(bytes).digest("hex")}`,
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
      }];
    };

    return {
      // A catalog that cannot be parsed throws: imagelet keeps serving the last good list and shows the error.
      list: () => parseCatalog(catalog).flatMap(toRecord),
      watch(onChange) {
        // The directory, not the file: agents replace a catalog by renaming a new one over it.
        const watcher = watch(dirname(catalog), () => onChange());
        return () => watcher.close();
      },
    };
  },
});
