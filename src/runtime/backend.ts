// The runtime's images enter the view as one more backend, through the same
// contract every store uses: list() is the runtime's ListImages, remove() its
// RemoveImage, fsInfo() its ImageFsInfo. So the view stays the one place that
// resolves references and merges names (the same ID from a store and from the
// runtime is one image, names merged), the registry's timeouts, last good
// snapshot and health apply to the runtime as to any store, and `imagelet
// plugins` shows it as a row. What differs is policy, not plumbing: the
// runtime's copy of an image is removable on its own (see PinPolicy.copies in
// registry/view.ts), and its filesystem, where pulled copies land, is the one
// kubelet's image GC can free (RegisteredBackend.primaryFilesystem).
import type { Backend, FsUsage, ImageRecord } from "../backend/contract";
import type { RuntimeClient, RuntimeImage } from "./client";

/** The backend name and type the runtime is registered under. */
export const RUNTIME_BACKEND = "runtime";

/** CRI-O's IDs are bare hex; the view's are `sha256:<hex>`. */
export function viewId(id: string): string {
  return /^[a-f0-9]{64}$/.test(id) ? `sha256:${id}` : id;
}

/** A CRI Image as the runtime lists it → the record every backend returns. */
export function runtimeRecord(image: RuntimeImage): ImageRecord {
  const uid = image.uid?.value;
  return {
    id: viewId(image.id ?? ""),
    repoTags: image.repoTags ?? [],
    repoDigests: image.repoDigests ?? [],
    size: Number(image.size ?? 0),
    user: image.username ? image.username : uid !== undefined && uid !== null ? String(uid) : undefined,
    kind: "oci",
    pinned: image.pinned === true ? true : undefined,
    source: "runtime",
  };
}

export interface RuntimeBackend extends Backend {
  /** The runtime's own ID for a view ID (they differ for CRI-O), as last listed. */
  runtimeId(id: string): string;
}

export function runtimeBackend(client: RuntimeClient): RuntimeBackend {
  let ids = new Map<string, string>();
  return {
    writable: true,
    async list(ctx) {
      const images = await client.listImages(ctx.signal);
      const next = new Map<string, string>();
      const records = images.map((image) => {
        const record = runtimeRecord(image);
        next.set(record.id, image.id ?? record.id);
        return record;
      });
      ids = next;
      return records;
    },
    async remove(id, ctx) {
      await client.removeImage(ids.get(id) ?? id, ctx.signal);
    },
    async fsInfo(ctx): Promise<FsUsage[]> {
      const filesystems = await client.imageFsInfo(ctx.signal);
      return filesystems
        .filter((fs) => typeof fs.fsId?.mountpoint === "string" && fs.fsId.mountpoint !== "")
        .map((fs) => ({ path: fs.fsId!.mountpoint!, usedBytes: Number(fs.usedBytes?.value ?? 0), inodesUsed: Number(fs.inodesUsed?.value ?? 0) }));
    },
    close() {
      client.close();
    },
    runtimeId: (id) => ids.get(id) ?? id,
  };
}

/** The line `imagelet plugins` shows beside the runtime's row. */
export function runtimeNotice(client: RuntimeClient): string {
  const s = client.state;
  if (s.state === "down") return `${s.endpoint} down since ${s.since}: ${s.lastError}`;
  if (s.state === "up") return `${s.endpoint} up since ${s.since}`;
  return `${s.endpoint} not reached yet`;
}
