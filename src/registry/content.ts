// Content for the registry mirror (docs/mirror.md): which backend holding an
// image can give the bytes of a digest reachable from it. Every ask goes
// through the registry's timed hook call, so a plugin that hangs or throws is
// attributed by name, as for list(); the answer is checked here, because a
// backend is untrusted input and its answer becomes HTTP headers and a body.
import type { ContentBody, Logger } from "../backend/contract";
import { isDigest } from "../model/digest";
import type { Image } from "../model/image";
import { quote } from "../model/reference";
import { errorText } from "../model/error-text";
import type { BackendRegistry, RegisteredBackend } from "./registry";
import { isMediaType } from "./validate";

export interface FoundContent {
  body: ContentBody;
  /** The backend that gave it, for the log. */
  backend: string;
  image: Image;
}

/** Found, or why not: the reasons name the backends (and their notices), for the 404's message. */
export type ContentAnswer = { found: FoundContent } | { found?: undefined; reasons: string[] };

/**
 * The bytes of `digest` (undefined: each image's own target), reachable from
 * one of `images`: each image's holders are asked in configuration order,
 * images whose target is the digest first. Embedded images are never served,
 * nor images without a target.
 */
export async function findContent(registry: BackendRegistry, images: readonly Image[], digest: string | undefined, log: Logger): Promise<ContentAnswer> {
  if (digest !== undefined && !isDigest(digest)) return { reasons: [`${quote(digest)} is not a digest`] };
  const reasons = new Set<string>();
  const ordered = [...images].sort((a, b) => Number(b.target?.digest === digest) - Number(a.target?.digest === digest));
  for (const image of ordered) {
    if (image.kind === "embedded") {
      reasons.add(`image ${image.id} is an embedded image, which the mirror never serves`);
      continue;
    }
    for (const name of image.backends) {
      const reg = registry.registered(name);
      if (!reg) continue;
      const refusal = holderRefusal(reg, name, image);
      if (refusal !== undefined || image.target === undefined) {
        reasons.add(refusal!);
        continue;
      }
      const wanted = digest ?? image.target.digest;
      let body: unknown;
      try {
        body = await registry.callHook(name, (backend, ctx) => backend.content!(image.id, wanted, ctx));
      } catch (e) {
        log.warn("backend content() failed", { backend: name, image: image.id, digest: wanted, error: errorText(e) });
        reasons.add(`backend ${quote(name)} failed: ${errorText(e)}`);
        continue;
      }
      if (body === undefined || body === null) continue;
      const problem = bodyProblem(body);
      if (problem !== undefined) {
        log.error("backend content() answered a malformed body; not served", { backend: name, image: image.id, digest: wanted, problem });
        reasons.add(`backend ${quote(name)} answered a malformed body (${problem})`);
        continue;
      }
      return { found: { body: body as ContentBody, backend: name, image } };
    }
  }
  return { reasons: [...reasons] };
}

/** Whether the mirror may serve `image` at all: the rule findContent applies, without asking any backend (tags/list lists only these). */
export function servable(registry: BackendRegistry, image: Image): boolean {
  if (image.kind === "embedded") return false;
  return image.backends.some((name) => {
    const reg = registry.registered(name);
    return reg !== undefined && holderRefusal(reg, name, image) === undefined;
  });
}

/** Why backend `name`, which lists `image`, cannot be asked for its content; undefined when it can. */
function holderRefusal(reg: RegisteredBackend, name: string, image: Image): string | undefined {
  if (typeof reg.backend.content !== "function") {
    const notice = reg.notice?.();
    return `backend ${quote(name)} (${reg.type}) does not serve its images on the mirror${notice ? `: ${notice}` : ""}`;
  }
  if (image.target === undefined) return `backend ${quote(name)} (${reg.type}) names no target for image ${image.id}`;
  return undefined;
}

/** What is wrong with a content() answer, or undefined when it is a ContentBody. */
export function bodyProblem(raw: unknown): string | undefined {
  if (typeof raw !== "object" || raw === null) return "not an object";
  const b = raw as Partial<ContentBody>;
  if (!isMediaType(b.mediaType)) return `mediaType ${quote(String(b.mediaType))} is not a media type`;
  if (typeof b.size !== "number" || !Number.isSafeInteger(b.size) || b.size < 0) return `size ${quote(String(b.size))} is not a length`;
  const kinds = [b.file !== undefined, b.bytes !== undefined, b.open !== undefined].filter(Boolean).length;
  if (kinds !== 1) return "exactly one of file, bytes and open must be set";
  if (b.file !== undefined) {
    const { path, offset } = b.file as Partial<NonNullable<ContentBody["file"]>>;
    if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0")) return "file.path is not an absolute path";
    if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return "file.offset is not a position";
  }
  if (b.bytes !== undefined && !(b.bytes instanceof Uint8Array && b.bytes.length === b.size)) return "bytes is not a Uint8Array of `size` bytes";
  if (b.open !== undefined && typeof b.open !== "function") return "open is not a function";
  return undefined;
}
