// Image references: a port of the docker/distribution reference grammar
// (github.com/distribution/reference regexp.go, normalize.go) plus the
// containerd ParseDockerRef defaults. Kubelet sends short names
// ("busybox:1.36") and never qualifies them, so the service must; crictl sends
// whatever the user typed. Every name we store or look up is normalized here,
// and nowhere else.
import { isDigest } from "./digest";

const DEFAULT_DOMAIN = "docker.io";
const LEGACY_DEFAULT_DOMAIN = "index.docker.io";
const OFFICIAL_REPO_PREFIX = "library/";
const DEFAULT_TAG = "latest";
const NAME_TOTAL_LENGTH_MAX = 255;
/**
 * No valid reference comes near this (name 255, tag 128, a sha512 digest 135
 * characters, their separators, and a shortened `index.docker.io/`), so
 * longer input is refused before the grammar runs: the grammar's repetitions
 * take about a second on a few megabytes of `a/a/…`, and a request may carry 4 MiB.
 */
export const MAX_REFERENCE_LENGTH = 1024;

// Grammar pieces, as in distribution/reference regexp.go.
const alphanumeric = "[a-z0-9]+";
const separator = "(?:[._]|__|[-]+)";
const domainNameComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const ipv6address = "\\[(?:[a-fA-F0-9:]+)\\]";
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`;
const host = `(?:${domainName}|${ipv6address})`;
const domainAndPort = `${host}(?::[0-9]+)?`;
const tag = "[\\w][\\w.-]{0,127}";
const digestPat = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const remoteName = `${pathComponent}(?:/${pathComponent})*`;
const namePat = `(?:${domainAndPort}/)?${remoteName}`;

const REFERENCE = new RegExp(`^(${namePat})(?::(${tag}))?(?:@(${digestPat}))?$`);
const ANCHORED_IDENTIFIER = /^[a-f0-9]{64}$/;
const TAG = new RegExp(`^${tag}$`);
const DOMAIN_AND_PORT = new RegExp(`^${domainAndPort}$`);

/** Why a string is not a reference; the message quotes the input. */
export class InvalidReferenceError extends Error {
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(`invalid image reference ${quote(input)}: ${reason}`);
    this.name = "InvalidReferenceError";
  }
}

/** A fully normalized reference: docker.io/library/busybox:latest and friends. */
export interface ImageReference {
  /** Repository with domain, e.g. `docker.io/library/busybox`. */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

/**
 * Quotes user input for messages and logs: JSON escaping makes control
 * characters and quotes visible, and very long inputs are cut.
 */
export function quote(input: string, max = 200): string {
  const cut = input.length > max ? `${input.slice(0, max)}…(${input.length} chars)` : input;
  return JSON.stringify(cut);
}

/** distribution/reference splitDockerDomain. */
function splitDockerDomain(name: string): [domain: string, remainder: string] {
  const slash = name.indexOf("/");
  if (slash < 0) return [DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name];
  const maybeDomain = name.slice(0, slash);
  const maybeRemote = name.slice(slash + 1);
  let domain: string;
  let remainder: string;
  // Order matters: index.docker.io contains a "." but is the default domain.
  if (maybeDomain === LEGACY_DEFAULT_DOMAIN) {
    [domain, remainder] = [DEFAULT_DOMAIN, maybeRemote];
  } else if (maybeDomain === "localhost" || /[.:]/.test(maybeDomain) || maybeDomain.toLowerCase() !== maybeDomain) {
    [domain, remainder] = [maybeDomain, maybeRemote];
  } else {
    [domain, remainder] = [DEFAULT_DOMAIN, name];
  }
  if (domain === DEFAULT_DOMAIN && !remainder.includes("/")) remainder = OFFICIAL_REPO_PREFIX + remainder;
  return [domain, remainder];
}

/**
 * distribution/reference ParseNormalizedNamed: accepts familiar names
 * (`busybox`, `library/busybox:1`, `foo/bar@sha256:…`) and returns the
 * reference with its domain filled in. Tag and digest are kept as given.
 */
export function parseNormalizedNamed(input: string): ImageReference {
  if (input === "") throw new InvalidReferenceError(input, "empty reference");
  if (input.length > MAX_REFERENCE_LENGTH) throw new InvalidReferenceError(input, `longer than ${MAX_REFERENCE_LENGTH} characters`);
  if (ANCHORED_IDENTIFIER.test(input)) {
    throw new InvalidReferenceError(input, "a 64-character hexadecimal string is an image ID, not a repository name");
  }
  const [domain, remainder] = splitDockerDomain(input);
  const at = remainder.indexOf("@");
  const beforeDigest = at < 0 ? remainder : remainder.slice(0, at);
  const colon = beforeDigest.indexOf(":");
  const remote = colon < 0 ? beforeDigest : beforeDigest.slice(0, colon);
  if (remote.toLowerCase() !== remote) {
    throw new InvalidReferenceError(input, "repository name must be lowercase");
  }
  return parseReference(`${domain}/${remainder}`, input);
}

/** distribution/reference Parse, on an already-qualified string. */
function parseReference(s: string, input: string): ImageReference {
  const m = REFERENCE.exec(s);
  if (!m) {
    if (REFERENCE.test(s.toLowerCase())) throw new InvalidReferenceError(input, "repository name must be lowercase");
    throw new InvalidReferenceError(input, "invalid reference format");
  }
  const [, repository, tagPart, digestPart] = m as unknown as [string, string, string | undefined, string | undefined];
  if (repository.length > NAME_TOTAL_LENGTH_MAX) {
    throw new InvalidReferenceError(input, `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }
  if (digestPart !== undefined && !isDigest(digestPart)) {
    throw new InvalidReferenceError(input, "unsupported or malformed digest");
  }
  return { repository, tag: tagPart, digest: digestPart };
}

/**
 * containerd's ParseDockerRef: normalize, default the tag to `latest` when
 * there is neither tag nor digest, and drop the tag when a digest is present
 * (the digest alone identifies the content).
 */
export function parseDockerRef(input: string): ImageReference {
  return withDefaultTag(parseNormalizedNamed(input));
}

/**
 * The default-tag rule, once: a reference with a digest is that digest (its
 * tag dropped); one with neither tag nor digest means `latest`.
 */
export function withDefaultTag(ref: ImageReference): ImageReference {
  if (ref.digest !== undefined) return { repository: ref.repository, digest: ref.digest };
  return { repository: ref.repository, tag: ref.tag ?? DEFAULT_TAG };
}

/** A normalized `repo:tag` (`latest` when it has no tag) for a reference without a digest. */
export function taggedReference(ref: ImageReference): string {
  return formatReference({ repository: ref.repository, tag: ref.tag ?? DEFAULT_TAG });
}

/** The registries containerd's `ns` may name for Docker Hub (it treats them as one host). */
const DOCKER_HUB_HOSTS: ReadonlySet<string> = new Set([DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io"]);

/**
 * The repository a registry-mirror request names (docs/mirror.md, "Names").
 * `name` is the `<name>` of `/v2/<name>/…`; `ns` is containerd's `?ns=`
 * query, the registry the client would otherwise have asked:
 *
 *   - containerd: `library/busybox` with ns `docker.io` → docker.io/library/busybox;
 *   - CRI-O and podman, the registry as the first component: `quay.io/org/app`;
 *   - Docker's registry-mirrors, a bare Docker Hub path: `library/busybox`.
 *
 * The last two are the familiar-name rule of parseNormalizedNamed, which the
 * first goes through too. Throws InvalidReferenceError for anything that is
 * not a repository name alone (a tag, a digest, an encoded character).
 */
export function mirrorRepository(name: string, ns?: string): string {
  let qualified = name;
  if (ns !== undefined) {
    const host = DOCKER_HUB_HOSTS.has(ns.toLowerCase()) ? DEFAULT_DOMAIN : ns;
    // A host the familiar-name rule would not read as a registry ("foo",
    // without a dot, a port or "localhost") would quietly become a Docker Hub path.
    const [domain] = splitDockerDomain(`${host}/x`);
    if (domain !== host || !DOMAIN_AND_PORT.test(host)) throw new InvalidReferenceError(ns, "the ns parameter is not a registry host");
    qualified = `${host}/${name}`;
  }
  const ref = parseNormalizedNamed(qualified);
  if (ref.tag !== undefined || ref.digest !== undefined) throw new InvalidReferenceError(name, "a repository name cannot carry a tag or digest");
  return ref.repository;
}

/** The canonical string of a reference: `repo:tag`, `repo@digest`. */
export function formatReference(ref: ImageReference): string {
  let s = ref.repository;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** Normalizes a name for storage and lookup: `busybox` → `docker.io/library/busybox:latest`. */
export function normalizeReference(input: string): string {
  return formatReference(parseDockerRef(input));
}

/** Whether a string is a valid tag (`[\w][\w.-]{0,127}`). */
export function isTag(value: string): boolean {
  return TAG.test(value);
}

/**
 * Whether a string looks like a full reference rather than a bare tag: it has
 * a `/`, `:` or `@` and passes the grammar (containerd's and image-spec
 * annotations' reading of `org.opencontainers.image.ref.name`).
 */
export function isFullReference(value: string): boolean {
  if (!/[/:@]/.test(value)) return false;
  try {
    parseNormalizedNamed(value);
    return true;
  } catch {
    return false;
  }
}
