// Conversion from the merged view to CRI runtime.v1 messages, in one place.
// Answers change only when a store changes, so the common ones (the full
// ListImages response, each non-verbose ImageStatus) are encoded once per
// view and served as bytes afterwards.
import { chainIds, rootfsDiffIds } from "../model/digest";
import { runtime } from "../gen/runtime-v1.js";
import { criUser, type Image } from "../model/image";
import type { FilesystemUsage } from "../registry/filesystems";
import type { ImageView } from "../registry/view";

type CriImage = runtime.v1.Image.$Properties;

/** The CRI Image for a view image. `withSpec` adds the manifest annotations, as CRI-O's ImageStatus does. */
export function toCriImage(image: Image, withSpec = false): CriImage {
  const { uid, username } = criUser(image.user);
  const out: CriImage = {
    id: image.id,
    repoTags: image.repoTags as string[],
    repoDigests: image.repoDigests as string[],
    size: image.size,
    username: username ?? "",
    pinned: image.pinned,
  };
  if (uid !== undefined) out.uid = { value: uid };
  if (withSpec && image.annotations && Object.keys(image.annotations).length > 0) {
    out.spec = { image: image.id, annotations: { ...image.annotations } };
  }
  return out;
}

/**
 * containerd's rootfs chain ID (identity.ChainID): chain(0) = diff_ids[0],
 * chain(n) = sha256(chain(n-1) + " " + diff_ids[n]).
 */
export function chainId(config: unknown): string | undefined {
  const diffIds = rootfsDiffIds(config);
  return typeof diffIds === "string" ? undefined : chainIds(diffIds).at(-1);
}

/**
 * verbose=true: `info["info"]` is a JSON object with `imageSpec`, as containerd
 * and CRI-O return. An artifact has no image config: its info carries its
 * manifest (and artifactType) instead.
 */
export function verboseInfo(detail: unknown, image?: Image): Record<string, string> {
  if (image?.kind === "artifact") {
    const artifactType = (detail as { artifactType?: unknown } | undefined)?.artifactType;
    const configType = (detail as { config?: { mediaType?: unknown } } | undefined)?.config?.mediaType;
    const type = typeof artifactType === "string" ? artifactType : typeof configType === "string" ? configType : undefined;
    return { info: JSON.stringify({ ...(type !== undefined ? { artifactType: type } : {}), manifest: detail ?? {} }) };
  }
  const config = detail;
  const info: Record<string, unknown> = {};
  const chain = chainId(config);
  if (chain) info.chainID = chain;
  info.imageSpec = config ?? {};
  return { info: JSON.stringify(info) };
}

/** ImageFsInfo entries; timestamps are nanoseconds since the epoch. */
export function toFilesystemUsage(filesystems: readonly FilesystemUsage[]): runtime.v1.FilesystemUsage.$Properties[] {
  return filesystems.map((f) => ({
    timestamp: f.measuredAt * 1e6,
    fsId: { mountpoint: f.mountpoint },
    usedBytes: { value: f.usedBytes },
    inodesUsed: { value: f.inodesUsed },
  }));
}

const m = runtime.v1;

/** StreamImages batch size: containerd's DefaultStreamBatchSize (CRI-O uses 3000). */
export const STREAM_BATCH = 5000;

/** Images in StreamImagesResponse batches of at most STREAM_BATCH; none for no images. */
export function encodeStreamBatches(images: readonly Image[]): Uint8Array[] {
  return streamBatchesOf(m.ListImagesResponse.encode({ images: images.map((image) => toCriImage(image)) }).finish());
}

/**
 * An encoded ListImagesResponse cut into StreamImagesResponse batches. Both
 * messages are `repeated Image images = 1`, so a batch is a run of the same
 * bytes: the batches are views of the list answer, not a second copy of it.
 */
function streamBatchesOf(list: Uint8Array): Uint8Array[] {
  const batches: Uint8Array[] = [];
  let start = 0;
  let pos = 0;
  let count = 0;
  while (pos < list.length) {
    pos++; // the field's tag: 1, length-delimited
    let length = 0;
    for (let shift = 1, byte = 0x80; byte & 0x80; shift *= 128) {
      byte = list[pos++]!;
      length += (byte & 0x7f) * shift;
    }
    pos += length;
    if (++count === STREAM_BATCH) {
      batches.push(list.subarray(start, pos));
      start = pos;
      count = 0;
    }
  }
  if (pos > start) batches.push(list.subarray(start, pos));
  return batches;
}

/** Per-view encoded answers; dropped with the view. */
class EncodedAnswers {
  private listAll?: Uint8Array;
  private streamAll?: Uint8Array[];
  private readonly status = new Map<string, Uint8Array>();
  constructor(private readonly view: ImageView) {}

  listImages(): Uint8Array {
    this.listAll ??= m.ListImagesResponse.encode({ images: this.view.images.map((i) => toCriImage(i)) }).finish();
    return this.listAll;
  }

  streamImages(): Uint8Array[] {
    this.streamAll ??= streamBatchesOf(this.listImages());
    return this.streamAll;
  }

  imageStatus(image: Image): Uint8Array {
    let bytes = this.status.get(image.id);
    if (!bytes) {
      bytes = m.ImageStatusResponse.encode({ image: toCriImage(image, true) }).finish();
      this.status.set(image.id, bytes);
    }
    return bytes;
  }
}

const answers = new WeakMap<ImageView, EncodedAnswers>();

export function encodedAnswers(view: ImageView): EncodedAnswers {
  let a = answers.get(view);
  if (!a) {
    a = new EncodedAnswers(view);
    answers.set(view, a);
  }
  return a;
}

/** ImageStatus for an image that is absent (or not servable): OK with `image` unset. */
export const IMAGE_NOT_FOUND: Uint8Array = m.ImageStatusResponse.encode({}).finish();
