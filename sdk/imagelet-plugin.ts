// imagelet's backend plugin SDK: the contract between imagelet and every
// backend, built-in or plugin. It is one self-contained file with no imports,
// so a plugin author can vendor the exact version their imagelet binary was
// built with:
//
//     imagelet sdk > imagelet-plugin.ts
//
// and write `import { defineBackend } from "./imagelet-plugin.ts"`. The
// built-in backends import this same file (through src/backend/contract.ts),
// so plugins and built-ins implement exactly one contract. Importing it is
// optional: a plain object default export with the same shape is a backend too.
//
// A backend is plain data and optional hooks, in the style of Rollup/Vite
// plugins: it never sees gRPC, other backends, or the merged view. See
// docs/plugins.md ("Writing a backend plugin").

/**
 * The contract version. Bumped only on an incompatible change to this file;
 * imagelet refuses a plugin whose `apiVersion` it does not support.
 */
export const apiVersion = 1;

/**
 * "oci": an image (its ID is its config digest). "artifact": an OCI artifact
 * (image-spec 1.1: a manifest with `artifactType`, or whose config is not an
 * image config); its ID is its manifest digest, as CRI-O's. "embedded":
 * iSulad's embedded images, listed but never served by ImageStatus.
 */
export type ImageKind = "oci" | "artifact" | "embedded";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One image as a backend sees it. The registry validates and normalizes it. */
export interface ImageRecord {
  /** `sha256:<64 hex>`: the config digest for OCI images. */
  id: string;
  /** References as the store names them; short names are normalized by the registry. */
  repoTags: string[];
  /** `repository@digest` references. */
  repoDigests: string[];
  /** Bytes, > 0 (kubelet rejects an image of size 0). */
  size: number;
  /** The OCI config's `User`, raw; the CRI uid/username rule is applied on the way out. */
  user?: string;
  /** RFC 3339 creation time, when the store knows it. */
  created?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  platform?: Platform;
  /** The OCI image config, for verbose ImageStatus. May be left out and served by `status()`. */
  config?: unknown;
  /** The OCI manifest of an "artifact" (it has no image config), for verbose ImageStatus. May be served by `status()`. */
  manifest?: unknown;
  /** "embedded" images (iSulad) are listed but never served by ImageStatus. */
  kind: ImageKind;
  /** Where the record came from (a file path), for diagnostics. */
  source?: string;
  /**
   * false: this backend, though writable, cannot remove this image (an archive
   * tarball that also holds other images). The image is reported pinned, so
   * kubelet's garbage collector does not pick it.
   */
  removable?: boolean;
  /**
   * true: the store itself keeps this image from garbage collection
   * (containerd's `io.cri-containerd.pinned=pinned` label). Reported pinned
   * whatever pinned_images says.
   */
  pinned?: boolean;
  /**
   * What this image's names resolve to on the mirror (docs/mirror.md): the
   * index or manifest as the store keeps it, or, for a store that keeps none,
   * the manifest the backend writes (see `content`). Only meaningful with a
   * `content` hook; leave it out otherwise.
   */
  target?: ContentDescriptor;
}

/** An OCI descriptor (image-spec descriptor.md): the name of one piece of content. */
export interface ContentDescriptor {
  mediaType: string;
  /** `sha256:<64 hex>` (or another registered algorithm). */
  digest: string;
  /** Exact length in bytes. */
  size: number;
}

/**
 * Bytes of one piece of content, as `content` returns them. Exactly one of
 * `file`, `bytes` or `open` is set; `size` is the exact length, and the bytes
 * must hash to the digest that was asked for (the mirror aborts a response
 * whose body does not, so a client never takes wrong bytes quietly).
 */
export interface ContentBody {
  /** The media type as stored (manifests), or the descriptor's type (blobs). */
  mediaType: string;
  size: number;
  /**
   * Content stored whole in one file, at `offset`: the mirror opens it once
   * per response and lets the OS send it. The backend has checked that the
   * path is inside its store.
   */
  file?: { path: string; offset: number };
  /** Small content held in memory (manifests, configs). */
  bytes?: Uint8Array;
  /**
   * Content made as it is sent (a layer re-created from an unpacked store):
   * yields the bytes from `start` to the end. It must throw, rather than
   * yield, bytes it cannot vouch for; the mirror then aborts the connection.
   * `trusted`: see `verifiedAs`.
   */
  open?(start: number, signal: AbortSignal, trusted?: boolean): AsyncIterable<Uint8Array>;
  /**
   * For an `open` body that can name what its bytes are made from: an opaque
   * key for those exact inputs (a re-created layer: its tar-split's and its
   * member files' identities), or undefined when it cannot name them yet.
   * The mirror asks before streaming and again after a whole stream
   * (start 0) hashed to the digest, and remembers that second key. When the
   * first is one it remembers, it calls `open(start, signal, true)` and does
   * not hash: the body must then throw before yielding a byte made from an
   * input that differs from what the key named, and before its end if an
   * input changed while it was read (the mirror holds its last chunk back
   * until it ends). The key may change once `open` has read the inputs.
   */
  verifiedAs?(): string | undefined;
}

/**
 * Thrown by `remove` when the store cannot remove the image as asked (it shares
 * a file with other images, say): the client gets FAILED_PRECONDITION with
 * the message, and the backend must have changed nothing. (Recognised by its
 * name, so a vendored copy of this file works.)
 */
export class RemovalRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RemovalRefused";
  }
}

/**
 * What a store's image data uses on disk, for ImageFsInfo. The registry finds
 * the filesystem holding `path` and adds up the stores that share it.
 */
export interface FsUsage {
  /** A directory holding the image data (the store root). */
  path: string;
  /** Bytes allocated on disk (as du counts them). */
  usedBytes: number;
  /** Files, directories and links, the directory itself included. */
  inodesUsed: number;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Given to every hook call. */
export interface CallContext {
  /** Aborted when the registry's per-call timeout expires; long work should stop. */
  signal: AbortSignal;
}

/** Given once, when a configured backend is created. */
export interface BackendContext {
  /** The instance name (the config's `name`, or the type). */
  name: string;
  /** Already tagged with this backend's name. */
  log: Logger;
  /** Directory of the config file, for resolving relative paths. */
  baseDir: string;
  /** The host platform, for picking a manifest from an index. */
  platform: Platform;
  /**
   * Sets (or clears, with undefined) a one-line notice about this store that
   * `imagelet plugins` shows: something the operator should know that is not
   * a failure, such as a store mode this backend cannot read.
   */
  setNotice(notice: string | undefined): void;
}

/** A configured, running backend: the hooks the registry calls. */
export interface Backend {
  /** Every image this store holds. Called at start, on `watch` notifications and on the poll interval. */
  list(ctx: CallContext): readonly ImageRecord[] | Promise<readonly ImageRecord[]>;
  /** Full detail (e.g. the OCI config) of one image this backend listed, by ID. */
  status?(id: string, ctx: CallContext): ImageRecord | undefined | Promise<ImageRecord | undefined>;
  /**
   * Content for the registry mirror: `digest` names a manifest, index,
   * config or layer reachable from the `target` of image `id` (one this
   * backend listed). Returns undefined when this store cannot serve it (not
   * reachable from that image, or not kept). Optional: without it the
   * backend's images are listed as before, and the mirror answers 404 for
   * them. The call is timed like every hook; a body's bytes are read after it
   * returns, for as long as the client takes.
   */
  content?(id: string, digest: string, ctx: CallContext): ContentBody | undefined | Promise<ContentBody | undefined>;
  /** Calls `onChange` when the store may have changed; returns a function that stops watching. */
  watch?(onChange: () => void): () => void;
  /**
   * True when the operator made this store writable (by convention a
   * `writable = true` option, default false). Only then does the registry
   * call `remove`; an image held by any backend that is not writable is
   * never removed and is reported pinned.
   */
  readonly writable?: boolean;
  /**
   * Removes the image `id` (one this backend listed) with every name it has
   * in this store (CRI RemoveImage removes every tag). Called one at a time,
   * never during another `remove`. Returns once the store no longer holds it
   * as far as a reader sees (the next `list()` leaves it out); data no other
   * image uses may be deleted after that point, and a process killed between
   * the two must leave a store that reads correctly. An `id` this store does
   * not hold is no error. Throws `RemovalRefused` to refuse, having changed
   * nothing. Optional: without it (or without `writable`) the store is read-only.
   */
  remove?(id: string, ctx: CallContext): void | Promise<void>;
  /** Disk usage of the image data; called in the background, never per RPC, so it may walk the store. */
  fsInfo?(ctx: CallContext): FsUsage[] | Promise<FsUsage[]>;
  close?(): void | Promise<void>;
}

export type OptionType = "string" | "number" | "boolean" | "string[]";

export interface OptionSpec {
  type: OptionType;
  required?: boolean;
  description?: string;
}

export type OptionSchema = Record<string, OptionSpec>;

type ValueOf<T extends OptionType> = T extends "string"
  ? string
  : T extends "number"
    ? number
    : T extends "boolean"
      ? boolean
      : string[];

/** The typed options a schema describes: required keys are present, the rest optional. */
export type OptionsOf<S extends OptionSchema> = {
  [K in keyof S as S[K]["required"] extends true ? K : never]: ValueOf<S[K]["type"]>;
} & {
  [K in keyof S as S[K]["required"] extends true ? never : K]?: ValueOf<S[K]["type"]>;
};

/** A backend type: what a `[[backend]] type = "<name>"` config entry instantiates. */
export interface BackendDefinition<S extends OptionSchema = OptionSchema> {
  /** The type name used in configuration: lowercase letters, digits and `-`. */
  name: string;
  /** The contract version this backend was written against (`apiVersion` of this file). */
  apiVersion: number;
  description?: string;
  /**
   * Keys a `[[backend]]` entry may carry besides `type`, `name` and `timeout`.
   * Unknown keys and wrong types are refused before `create` runs.
   */
  options: S;
  /** Throws `OptionError` for an option value that is well-typed but unusable. */
  create(options: OptionsOf<S>, ctx: BackendContext): Backend | Promise<Backend>;
}

/**
 * Thrown by `create` for an option value that is well-typed but unusable.
 * imagelet reports it like a configuration error, with the file and key.
 * (Recognised by its name and `key`, so a vendored copy of this file works.)
 */
export class OptionError extends Error {
  /** The option's key in the `[[backend]]` entry. */
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.name = "OptionError";
    this.key = key;
  }
}

/**
 * Returns the definition stamped with this file's `apiVersion` (unless it
 * names one). It exists for type inference: `options` in `create` gets the
 * types the schema describes.
 */
export function defineBackend<const S extends OptionSchema>(
  definition: Omit<BackendDefinition<S>, "apiVersion"> & { apiVersion?: number },
): BackendDefinition<S> {
  return { ...definition, apiVersion: definition.apiVersion ?? apiVersion };
}
