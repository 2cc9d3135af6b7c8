// The pull API's routes (distribution-spec "Pull"), read at a glance. A path
// is matched after the HTTP layer has resolved its dot segments (as a URL
// parser does); what a route captures is then held to the spec's grammar
// (names, tags, digests) before it is used, so an encoded character (`%2f`,
// `%2e`) never reaches a lookup, and nothing a request says becomes a path.
import { isDigest } from "../model/digest";
import { InvalidReferenceError, isTag, mirrorRepository } from "../model/reference";
import { MirrorError } from "./errors";

export type Route =
  | { kind: "base" }
  | { kind: "manifest"; name: string; repository: string; reference: Reference }
  | { kind: "blob"; name: string; repository: string; digest: string }
  | { kind: "tags"; name: string; repository: string };

export type Reference = { tag: string } | { digest: string };

/** `/v2/<name>/…` as each client sends it; `<name>` may hold slashes, so the route's last part decides. */
const ROUTES: readonly { pattern: RegExp; kind: Route["kind"] }[] = [
  { pattern: /^\/v2\/?$/, kind: "base" }, //                              GET /v2/
  { pattern: /^\/v2\/(.+)\/manifests\/([^/]+)$/, kind: "manifest" }, //   GET /v2/<name>/manifests/<tag|digest>
  { pattern: /^\/v2\/(.+)\/blobs\/([^/]+)$/, kind: "blob" }, //           GET /v2/<name>/blobs/<digest>
  { pattern: /^\/v2\/(.+)\/tags\/list$/, kind: "tags" }, //               GET /v2/<name>/tags/list
];

/** The route a path names, with its parts checked; throws MirrorError (NOT_FOUND, NAME_INVALID, …). */
export function matchRoute(path: string, ns: string | null): Route {
  for (const { pattern, kind } of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    if (kind === "base") return { kind };
    const name = m[1]!;
    const repository = repositoryOf(name, ns);
    if (kind === "tags") return { kind, name, repository };
    const last = m[2]!;
    if (kind === "blob") return { kind, name, repository, digest: digestOf(last) };
    return { kind, name, repository, reference: last.includes(":") ? { digest: digestOf(last) } : { tag: tagOf(last) } };
  }
  throw new MirrorError("NOT_FOUND", undefined, { path: path.slice(0, 200) });
}

function repositoryOf(name: string, ns: string | null): string {
  try {
    return mirrorRepository(name, ns ?? undefined);
  } catch (e) {
    if (!(e instanceof InvalidReferenceError)) throw e;
    const detail = ns === null ? { name: name.slice(0, 300) } : { name: name.slice(0, 300), ns: ns.slice(0, 300) };
    throw new MirrorError("NAME_INVALID", e.message, detail);
  }
}

function digestOf(text: string): string {
  if (isDigest(text)) return text;
  const shown: string = text;
  throw new MirrorError("DIGEST_INVALID", `${JSON.stringify(shown.slice(0, 200))} is not a digest (algorithm:hex, sha256, sha384 or sha512)`, { digest: shown.slice(0, 200) });
}

function tagOf(text: string): string {
  if (!isTag(text)) throw new MirrorError("TAG_INVALID", `${JSON.stringify(text.slice(0, 200))} is not a tag`, { tag: text.slice(0, 200) });
  return text;
}
