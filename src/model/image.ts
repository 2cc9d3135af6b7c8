// An image in the merged view: what the registry serves after validating,
// normalizing and merging the records of every backend that holds it.
import type { ContentDescriptor, ImageKind, Platform } from "../backend/contract";

export interface Image {
  /** `sha256:<64 hex>`. */
  readonly id: string;
  /** Normalized `repo:tag` references, in backend order. */
  readonly repoTags: readonly string[];
  /** Normalized `repo@digest` references, in backend order. */
  readonly repoDigests: readonly string[];
  readonly size: number;
  readonly user?: string;
  readonly created?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: Platform;
  readonly config?: unknown;
  /** An artifact's manifest (it has no image config). */
  readonly manifest?: unknown;
  readonly kind: ImageKind;
  /** What its names resolve to on the registry mirror (ImageRecord.target; the first backend's that has one). */
  readonly target?: ContentDescriptor;
  /** Names of the backends that hold this image, in configuration order. */
  readonly backends: readonly string[];
  /**
   * Kept from kubelet's garbage collector: a name matches pinned_images, or
   * imagelet cannot remove it (a backend holding it is not writable, or
   * cannot remove this one; embedded images).
   */
  readonly pinned: boolean;
}

/**
 * The CRI user rule shared by containerd, CRI-O and cri-dockerd
 * (getUserFromImage): the part of `User` before the first `:`; a decimal
 * integer is a uid, anything else a username, empty sets neither.
 */
export function criUser(user: string | undefined): { uid?: number; username?: string } {
  if (!user) return {};
  const name = user.split(":", 1)[0] ?? "";
  if (name === "") return {};
  // strconv.ParseInt(s, 10, 64): optional sign, decimal digits, within int64.
  if (/^[+-]?[0-9]+$/.test(name)) {
    const big = BigInt(name);
    if (big >= -(2n ** 63n) && big < 2n ** 63n) return { uid: Number(big) };
  }
  return { username: name };
}
