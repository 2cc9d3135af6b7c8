// pinned_images: which images kubelet's image garbage collector must never
// pick. The syntax is CRI-O's (crio.conf.5.md, `pinned_images`; its
// CompileRegexpsForPinnedImages), matched case-insensitively against every
// tag and digest of an image:
//   - exact      `registry.k8s.io/pause:3.10`  the whole name;
//   - glob       `registry.k8s.io/pause*`      the text before the `*`, as CRI-O's
//                                               unanchored regexp `prefix.*` does;
//   - keyword    `*pause*`                     the word anywhere in the name.
// imagelet's names are normalized (docker.io/library/, :latest), so an exact
// pattern is normalized the same way (`busybox` pins docker.io/library/busybox:latest),
// and a glob whose prefix is a reference also matches in its normalized form
// (`busybox:1.*` pins docker.io/library/busybox:1.36).
import { InvalidReferenceError, formatReference, parseNormalizedNamed, quote, withDefaultTag } from "./reference";

/** A pinned_images entry that is none of the three forms. */
export class PinnedPatternError extends Error {
  constructor(
    readonly pattern: string,
    reason: string,
  ) {
    super(`pinned image pattern ${quote(pattern)}: ${reason}`);
    this.name = "PinnedPatternError";
  }
}

type Matcher = (name: string) => boolean;

/** The compiled pinned_images list. */
export class PinnedImages {
  static readonly none = new PinnedImages([]);
  private readonly matchers: Matcher[];

  constructor(readonly patterns: readonly string[]) {
    this.matchers = patterns.map(compile);
  }

  get empty(): boolean {
    return this.matchers.length === 0;
  }

  /** Whether any of an image's names (normalized tags and digests) is pinned. */
  matches(names: Iterable<string>): boolean {
    if (this.matchers.length === 0) return false;
    for (const name of names) {
      const lower = name.toLowerCase();
      if (this.matchers.some((m) => m(lower))) return true;
    }
    return false;
  }
}

function compile(pattern: string): Matcher {
  if (pattern.length === 0) throw new PinnedPatternError(pattern, "empty");
  const star = pattern.indexOf("*");
  if (pattern.length > 1 && pattern.startsWith("*") && pattern.endsWith("*")) {
    const keyword = pattern.slice(1, -1).toLowerCase();
    if (keyword.includes("*")) throw new PinnedPatternError(pattern, "a `*` may only start and end a keyword (`*word*`)");
    return (name) => name.includes(keyword);
  }
  if (star >= 0 && star === pattern.length - 1) {
    const prefix = pattern.slice(0, -1);
    if (prefix.length === 0) throw new PinnedPatternError(pattern, "a glob needs text before its `*`");
    const raw = prefix.toLowerCase();
    const normalized = normalizedPrefix(prefix)?.toLowerCase();
    return (name) => name.includes(raw) || (normalized !== undefined && name.startsWith(normalized));
  }
  if (star >= 0) throw new PinnedPatternError(pattern, "`*` may only end a glob (`name*`) or surround a keyword (`*word*`)");
  let exact: string;
  try {
    const ref = parseNormalizedNamed(pattern);
    exact = formatReference(withDefaultTag(ref));
  } catch (e) {
    if (e instanceof InvalidReferenceError) throw new PinnedPatternError(pattern, `not an image reference (${e.message})`);
    throw e;
  }
  const lower = exact.toLowerCase();
  return (name) => name === lower;
}

/** A glob's prefix in normalized form, when it is a reference (no default tag added); else undefined. */
function normalizedPrefix(prefix: string): string | undefined {
  try {
    const ref = parseNormalizedNamed(prefix);
    return formatReference(ref);
  } catch {
    return undefined;
  }
}
