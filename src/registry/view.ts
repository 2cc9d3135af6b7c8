// The merged view: an immutable, indexed snapshot of every backend's images.
// A new view is built whenever a backend's snapshot changes; RPCs read the
// current one and never scan it. Reference resolution lives here and only here.
import type { Image } from "../model/image";
import { PinnedImages } from "../model/pinned";
import { InvalidReferenceError, formatReference, parseNormalizedNamed, quote, taggedReference } from "../model/reference";
import type { ValidRecord } from "./validate";

/** Input that names more than one image. */
export class AmbiguousReferenceError extends Error {
  constructor(readonly input: string, count: number) {
    super(`image reference ${quote(input)} is ambiguous: it is a prefix of ${count} image IDs`);
    this.name = "AmbiguousReferenceError";
  }
}

export interface BackendSnapshot {
  backend: string;
  records: readonly ValidRecord[];
}

/** Reports a tag or digest claimed by two different images; called once per conflict per view. */
export type ConflictReporter = (reference: string, keptId: string, keptBackend: string, droppedId: string, droppedBackend: string) => void;

const HEX_PREFIX = /^(?:sha256:)?([a-f0-9]{3,64})$/;
const MIN_PREFIX = 3;
/** How many distinct ImageStatus inputs a view remembers the answer to (see resolve()). */
const RESOLVED_MEMO_LIMIT = 4096;

/** What decides Image.pinned (see Image.pinned). */
export interface PinPolicy {
  patterns: PinnedImages;
  /** Backends that may remove images (writable, with a remove hook). */
  removers: ReadonlySet<string>;
}

/** Without a policy every image is pinned: nothing can remove it. */
const NO_REMOVERS: PinPolicy = { patterns: PinnedImages.none, removers: new Set() };

/** An Image while merge() is still building it. */
type MutableImage = { -readonly [K in keyof Image]: Image[K] } & { repoTags: string[]; repoDigests: string[]; backends: string[] };

export class ImageView {
  /** Every image, in configuration order of the first backend that holds it. */
  readonly images: readonly Image[];
  private readonly byId = new Map<string, Image>();
  /** Normalized `repo:tag` and `repo@digest` → image. */
  private readonly byReference = new Map<string, Image>();
  /** Repository → images tagged or digested in it, for repository-only filters. */
  private readonly byRepository = new Map<string, Image[]>();
  /** Sorted hex of every ID, for prefix lookups by binary search. */
  private readonly sortedHex: string[];
  /** resolve() results by input (null: nothing matched). */
  private readonly resolved = new Map<string, Image | null>();

  private constructor(images: Image[]) {
    this.images = images;
    for (const image of images) {
      this.byId.set(image.id, image);
      for (const ref of [...image.repoTags, ...image.repoDigests]) {
        this.byReference.set(ref, image);
        const repository = ref.slice(0, repositoryEnd(ref));
        const list = this.byRepository.get(repository);
        if (!list) this.byRepository.set(repository, [image]);
        else if (list[list.length - 1] !== image) list.push(image);
      }
    }
    this.sortedHex = images.map((i) => i.id.slice("sha256:".length)).sort();
  }

  static readonly empty = new ImageView([]);

  /**
   * Merges backend snapshots, given in configuration order. The same ID from
   * two backends is one image with the union of its names; a tag or digest
   * claimed by two different images stays with the earlier backend's image.
   */
  static merge(snapshots: readonly BackendSnapshot[], onConflict?: ConflictReporter, policy: PinPolicy = NO_REMOVERS): ImageView {
    const byId = new Map<string, MutableImage>();
    /** Images some backend says it cannot remove (ImageRecord.removable false) or keeps pinned itself. */
    const unremovable = new Set<string>();
    const owner = new Map<string, { id: string; backend: string }>();
    for (const { backend, records } of snapshots) {
      for (const r of records) {
        let image = byId.get(r.id);
        if (!image) {
          image = {
            id: r.id, repoTags: [], repoDigests: [], size: r.size, user: r.user, created: r.created,
            labels: r.labels, annotations: r.annotations, platform: r.platform, config: r.config,
            manifest: r.manifest, kind: r.kind, target: r.target, backends: [backend], pinned: false,
          };
          byId.set(r.id, image);
        } else {
          if (!image.backends.includes(backend)) image.backends.push(backend);
          // Fill what an earlier backend did not know; never override it.
          image.config ??= r.config;
          image.user ??= r.user;
          image.created ??= r.created;
          image.labels ??= r.labels;
          image.annotations ??= r.annotations;
          image.platform ??= r.platform;
          image.manifest ??= r.manifest;
          image.target ??= r.target;
          // An image any backend holds as a real OCI image is servable by ImageStatus.
          if (r.kind === "oci") image.kind = "oci";
        }
        if (r.removable === false || r.kind === "embedded" || r.pinned === true) unremovable.add(r.id);
        for (const [names, target] of [[r.repoTags, image.repoTags], [r.repoDigests, image.repoDigests]] as const) {
          for (const ref of names) {
            const claimed = owner.get(ref);
            if (!claimed) {
              owner.set(ref, { id: r.id, backend });
              target.push(ref);
            } else if (claimed.id !== r.id) {
              onConflict?.(ref, claimed.id, claimed.backend, r.id, backend);
            } else if (!target.includes(ref)) {
              target.push(ref);
            }
          }
        }
      }
    }
    for (const image of byId.values()) {
      image.pinned =
        unremovable.has(image.id) ||
        image.backends.some((b) => !policy.removers.has(b)) ||
        (!policy.patterns.empty && (policy.patterns.matches(image.repoTags) || policy.patterns.matches(image.repoDigests)));
    }
    return new ImageView([...byId.values()]);
  }

  get size(): number {
    return this.images.length;
  }

  getById(id: string): Image | undefined {
    return this.byId.get(id);
  }

  /**
   * ImageStatus resolution: exact ID → normalized reference (name, name:tag,
   * name@digest, name:tag@digest, with docker.io/library/ and :latest
   * defaults) → unique hex ID prefix of at least 3 characters, with or without
   * `sha256:`. Returns undefined when nothing matches; throws
   * InvalidReferenceError for empty or malformed input and
   * AmbiguousReferenceError for a prefix of several IDs.
   */
  resolve(input: string): Image | undefined {
    // kubelet asks ImageStatus of the same few references over and over; the
    // view never changes, so the answer to an input is parsed once. Inputs that
    // throw are not remembered, and the memo is bounded against callers that
    // never repeat an input.
    const memo = this.resolved.get(input);
    if (memo !== undefined) return memo ?? undefined;
    const found = this.lookup(input);
    if (found.length > 1) throw new AmbiguousReferenceError(input, found.length);
    if (this.resolved.size >= RESOLVED_MEMO_LIMIT) this.resolved.clear();
    this.resolved.set(input, found[0] ?? null);
    return found[0];
  }

  /** The image a normalized repository's tag names (the registry mirror's tag lookup). */
  tagged(repository: string, tag: string): Image | undefined {
    return this.byReference.get(formatReference({ repository, tag }));
  }

  /** Every image tagged or digested in a normalized repository, in view order (empty when none). */
  inRepository(repository: string): readonly Image[] {
    return this.byRepository.get(repository) ?? [];
  }

  /**
   * ListImages filter: like resolve(), but a repository name without tag or
   * digest selects every image in that repository (as `docker images busybox`
   * does), and an ID prefix selects every image it is a prefix of.
   */
  filter(input: string): Image[] {
    return this.lookup(input, true);
  }

  private lookup(input: string, wholeRepository = false): Image[] {
    if (input.length === 0) throw new InvalidReferenceError(input, "empty reference");
    const exact = this.byId.get(input) ?? (input.length === 64 ? this.byId.get(`sha256:${input}`) : undefined);
    if (exact) return [exact];

    let reference: ReturnType<typeof parseNormalizedNamed> | undefined;
    let referenceError: InvalidReferenceError | undefined;
    try {
      reference = parseNormalizedNamed(input);
    } catch (e) {
      referenceError = e as InvalidReferenceError;
    }
    if (reference) {
      if (reference.digest !== undefined) {
        // name:tag@digest: the digest identifies the content; the tag is dropped (containerd).
        const image = this.byReference.get(formatReference({ repository: reference.repository, digest: reference.digest }));
        if (image) return [image];
      } else if (reference.tag === undefined && wholeRepository) {
        const images = this.byRepository.get(reference.repository);
        if (images) return [...images];
      } else {
        const image = this.byReference.get(taggedReference(reference));
        if (image) return [image];
      }
    }

    const prefix = HEX_PREFIX.exec(input)?.[1];
    if (prefix !== undefined && prefix.length >= MIN_PREFIX) return this.byIdPrefix(prefix);
    if (referenceError) throw referenceError;
    return [];
  }

  private byIdPrefix(prefix: string): Image[] {
    const hex = this.sortedHex;
    let lo = 0;
    let hi = hex.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hex[mid]! < prefix) lo = mid + 1;
      else hi = mid;
    }
    const found: Image[] = [];
    for (let i = lo; i < hex.length && hex[i]!.startsWith(prefix); i++) found.push(this.byId.get(`sha256:${hex[i]}`)!);
    return found;
  }
}

/** Where the repository part of a normalized `repo:tag` or `repo@digest` ends. */
function repositoryEnd(ref: string): number {
  const at = ref.indexOf("@");
  if (at >= 0) return at;
  return ref.lastIndexOf(":");
}
