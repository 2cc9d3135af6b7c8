// DistributionRoutes: the pull API's handlers. Each is a few lines: ask the
// view (the one place that resolves names) which images a request can reach,
// ask their backends for the bytes (registry/content.ts), and turn the answer
// into a response. The mirror keeps no state of its own: a reload or a store
// change is seen by the next request, as by ListImages.
import type { ContentDescriptor, Logger } from "../backend/contract";
import { findContent, servable, type FoundContent } from "../registry/content";
import type { Lease, ServedRegistry } from "../registry/served";
import { bodyStream, descriptorHeaders, prepareBody, type ReadyBody } from "./body";
import { API_VERSION_HEADER, errorReply, MirrorError, type ErrorCode } from "./errors";
import { isFileRegion, type MirrorRequest, type Reply } from "./reply";
import { contentRange, parseRange, type ByteRange } from "./range";
import { matchRoute, type Route } from "./routes";
import type { MirrorRequestCounter } from "../runtime/mirror-witness";

/** What a `/manifests/` request may answer (by digest; by tag, the target is served as stored). */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v1+prettyjws",
]);

/** A request's method, URL and Range header: what the handlers read. */
interface Asked {
  method: "GET" | "HEAD";
  url: URL;
  range: string | null;
  signal: AbortSignal;
}

export class DistributionRoutes {
  constructor(
    private readonly served: ServedRegistry,
    private readonly log: Logger,
    /** Front mode: counts the repositories asked for, so a runtime pull that never comes here is told apart (src/runtime/preload.ts). */
    private readonly witness?: MirrorRequestCounter,
  ) {}

  /** Never throws: every failure is an error answer, and anything absent a 404. */
  async answer(request: MirrorRequest): Promise<Reply> {
    const method = request.method;
    let route: Route | undefined;
    // Held from the lookup until the body is sent: a reload does not close the store under it.
    const lease = this.served.lease();
    let handedOver = false;
    try {
      if (method !== "GET" && method !== "HEAD") {
        throw new MirrorError("UNSUPPORTED", `${method} is not served: the mirror is read-only (GET and HEAD)`, { method: method.slice(0, 20) }, { Allow: "GET, HEAD" });
      }
      const url = new URL(request.url);
      if (url.pathname.includes("%")) throw new MirrorError("NAME_INVALID", "an encoded character in the path: no name, tag or digest has one", { path: url.pathname.slice(0, 200) });
      route = matchRoute(url.pathname, url.searchParams.get("ns"));
      if (route.kind !== "base") this.witness?.saw(route.repository);
      const asked: Asked = { method, url, range: request.range, signal: request.signal };
      switch (route.kind) {
        case "base":
          return jsonReply(asked, {});
        case "tags":
          return this.tags(asked, lease, route);
        case "manifest":
        case "blob": {
          const found = route.kind === "manifest" ? await this.manifest(asked, lease, route) : await this.content(asked, lease, route.repository, route.digest, "BLOB_UNKNOWN");
          // From here the body releases the lease, once it is sent or abandoned.
          let reply: Reply;
          try {
            reply = this.send(asked, found, route.kind, lease);
          } catch (e) {
            found.ready.close();
            throw e;
          }
          handedOver = true;
          return reply;
        }
      }
      throw new MirrorError("NOT_FOUND");
    } catch (e) {
      if (e instanceof MirrorError) return errorReply(e, method);
      this.log.error("mirror: request failed", { method, url: request.url.slice(0, 300), error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      const code: ErrorCode = route?.kind === "manifest" ? "MANIFEST_UNKNOWN" : route?.kind === "blob" ? "BLOB_UNKNOWN" : "NOT_FOUND";
      return errorReply(new MirrorError(code, "internal error; imagelet's log has it"), method);
    } finally {
      if (!handedOver) lease.release();
    }
  }

  /** GET /v2/<name>/tags/list[?n=&last=]: the tags the mirror serves, in lexical order. */
  private tags(asked: Asked, lease: Lease, route: Extract<Route, { kind: "tags" }>): Reply {
    const images = lease.registry.view.inRepository(route.repository);
    if (images.length === 0) throw unknownRepository(route);
    const prefix = `${route.repository}:`;
    const all = [...new Set(images.filter((i) => servable(lease.registry, i)).flatMap((i) => i.repoTags.filter((t) => t.startsWith(prefix)).map((t) => t.slice(prefix.length))))].sort();
    const nText = asked.url.searchParams.get("n");
    const last = asked.url.searchParams.get("last");
    if (nText !== null && !/^\d{1,9}$/.test(nText)) throw new MirrorError("PAGINATION_NUMBER_INVALID", `n=${JSON.stringify(nText.slice(0, 40))} is not a number of tags`, { n: nText.slice(0, 40) });
    const after = last === null ? all : all.filter((t) => t > last);
    const n = nText === null ? after.length : Number(nText);
    const page = after.slice(0, n);
    const headers: Record<string, string> = {};
    if (page.length < after.length && page.length > 0) {
      const next = new URLSearchParams({ n: String(n), last: page[page.length - 1]! });
      const ns = asked.url.searchParams.get("ns");
      if (ns !== null) next.set("ns", ns);
      headers.Link = `</v2/${route.name}/tags/list?${next}>; rel="next"`;
    }
    return jsonReply(asked, { name: route.name, tags: page }, headers);
  }

  /** A manifest by tag (the image's target, as stored) or by digest; either way, only a manifest or index type. */
  private async manifest(asked: Asked, lease: Lease, route: Extract<Route, { kind: "manifest" }>): Promise<Served> {
    const { reference } = route;
    const served = "digest" in reference ? await this.content(asked, lease, route.repository, reference.digest, "MANIFEST_UNKNOWN") : await this.target(asked, lease, route, reference.tag);
    if (!MANIFEST_MEDIA_TYPES.has(served.descriptor.mediaType)) {
      throw new MirrorError("MANIFEST_UNKNOWN", `${served.descriptor.digest} is a ${served.descriptor.mediaType}, not a manifest`, { digest: served.descriptor.digest });
    }
    return served;
  }

  /** What a tag's image names: its target, from the first of its backends that can give it. */
  private async target(asked: Asked, lease: Lease, route: { repository: string }, tag: string): Promise<Served> {
    const image = lease.registry.view.tagged(route.repository, tag);
    if (!image) {
      if (lease.registry.view.inRepository(route.repository).length === 0) throw unknownRepository(route);
      throw new MirrorError("MANIFEST_UNKNOWN", `no image is tagged ${route.repository}:${tag}`, { repository: route.repository, tag });
    }
    const answer = await findContent(lease.registry, [image], undefined, this.log);
    const target = image.target;
    if (!answer.found || !target) {
      throw new MirrorError("MANIFEST_UNKNOWN", notServed(`${route.repository}:${tag}`, answer.found ? [] : answer.reasons), { repository: route.repository, tag });
    }
    if (answer.found.body.size !== target.size) {
      this.log.error("mirror: a backend's target and its content differ in size; not served", { backend: answer.found.backend, image: image.id, digest: target.digest, target: target.size, content: answer.found.body.size });
      throw new MirrorError("MANIFEST_UNKNOWN", `backend ${JSON.stringify(answer.found.backend)} gave ${answer.found.body.size} bytes for a target of ${target.size}`, { digest: target.digest });
    }
    return this.checked(asked, answer.found, target.digest, "MANIFEST_UNKNOWN");
  }

  /** Content by digest, reachable from an image of the repository. */
  private async content(asked: Asked, lease: Lease, repository: string, digest: string, code: "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN"): Promise<Served> {
    const images = lease.registry.view.inRepository(repository);
    if (images.length === 0) throw unknownRepository({ repository });
    const answer = await findContent(lease.registry, images, digest, this.log);
    if (!answer.found) throw new MirrorError(code, notServed(`${repository}@${digest}`, answer.reasons), { repository, digest });
    return this.checked(asked, answer.found, digest, code);
  }

  /** Refuses, before any header is sent, a body that cannot be what it claims. */
  private async checked(asked: Asked, found: FoundContent, digest: string, code: "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN"): Promise<Served> {
    const prepared = await prepareBody(found.body, digest, asked.method === "GET");
    if ("refusal" in prepared) {
      this.log.error("mirror: a backend's content does not match its digest; not served", { backend: found.backend, image: found.image.id, digest, problem: prepared.refusal });
      throw new MirrorError(code, `backend ${JSON.stringify(found.backend)} cannot serve ${digest}: ${prepared.refusal}`, { digest });
    }
    return { found, ready: prepared.ready, descriptor: { mediaType: found.body.mediaType, digest, size: found.body.size } };
  }

  /** The answer for found content: headers from its descriptor; a blob honours one Range. */
  private send(asked: Asked, served: Served, kind: "manifest" | "blob", lease: Lease): Reply {
    const { descriptor, ready } = served;
    const size = descriptor.size;
    const extra: Record<string, string> = kind === "blob" ? { "Accept-Ranges": "bytes" } : {};
    // Range is a GET's (RFC 9110 14.2); manifests are sent whole, as Spegel and distribution do.
    const range = kind === "blob" && asked.method === "GET" ? parseRange(asked.range, size) : "whole";
    if (range === "unsatisfiable") {
      throw new MirrorError("RANGE_NOT_SATISFIABLE", `the blob has ${size} bytes`, { size }, { ...extra, "Content-Range": `bytes */${size}` });
    }
    const part: ByteRange = range === "whole" ? { start: 0, end: size - 1 } : range;
    const length = part.end - part.start + 1;
    const headers = { ...descriptorHeaders(descriptor, length), ...extra, ...(range === "whole" ? {} : { "Content-Range": contentRange(part, size) }) };
    const status = range === "whole" ? 200 : 206;
    if (asked.method === "HEAD" || length === 0) {
      ready.close();
      lease.release();
      return { status, headers };
    }
    const body = bodyStream(ready, descriptor.digest, part, asked.signal, lease.release, this.log);
    if (isFileRegion(body)) body.missing = kind === "manifest" ? "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN";
    return { status, headers, body };
  }
}

interface Served {
  found: FoundContent;
  /** The body checked and ready to send; closed by whoever ends up not sending it. */
  ready: ReadyBody;
  descriptor: ContentDescriptor;
}

function unknownRepository(route: { repository: string }): MirrorError {
  return new MirrorError("NAME_UNKNOWN", `no image is named in repository ${route.repository}`, { repository: route.repository });
}

function notServed(what: string, reasons: readonly string[]): string {
  return reasons.length === 0 ? `${what} is not reachable from any image served` : `${what} is not served: ${reasons.join("; ")}`;
}

function jsonReply(asked: Asked, value: unknown, headers: Record<string, string> = {}): Reply {
  const body = new TextEncoder().encode(JSON.stringify(value));
  const all = { ...API_VERSION_HEADER, ...headers, "Content-Type": "application/json; charset=utf-8", "Content-Length": String(body.length) };
  return asked.method === "HEAD" ? { status: 200, headers: all } : { status: 200, headers: all, body };
}
