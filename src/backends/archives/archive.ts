// The images of one image tarball, from its listing and its small JSON
// members (docs/backends.md#archives). An archive with `oci-layout` is an
// OCI layout in a tar (oci-archive, Docker >= 25 `docker save`, `ctr export`)
// and is read exactly as the oci-layout backend reads a directory; otherwise
// it is a docker-archive (legacy `docker save`, skopeo, podman save), read
// from manifest.json.
import { createHash } from "node:crypto";
import type { ImageRecord, Logger, Platform } from "../../backend/contract";
import { digestParts } from "../../model/digest";
import { quote } from "../../model/reference";
import { StoreProblem, parseJson, type ProblemLog } from "../common/files";
import { layoutImages, mergeNames, parseConfig, tagOf, type LayoutSource } from "../oci-layout/images";
import { verifiedJsonBlob } from "../oci-layout/layout";
import { resolveMember, type TarContents } from "./tar";

export interface ArchiveContext {
  /** Repository for bare-tag ref.names in an OCI archive. */
  repository: string;
  platform: Platform;
  problems: ProblemLog;
  log: Logger;
  backend: string;
}

/** How problems inside a tarball are located: `<tarball>!/<member>`. */
export const memberPath = (tarPath: string, member: string) => `${tarPath}!/${member}`;

function readJsonMember(contents: TarContents, name: string, tarPath: string): { value: unknown; bytes: Buffer; member: string } {
  const m = resolveMember(contents, name, tarPath);
  const bytes = contents.read(m);
  return { value: parseJson(bytes, memberPath(tarPath, m.name)), bytes, member: m.name };
}

/** The images of one tarball; throws StoreProblem when the tarball as a whole is unusable. */
export function archiveImages(contents: TarContents, tarPath: string, ctx: ArchiveContext): ImageRecord[] {
  // containerd's importer checks oci-layout first too: Docker >= 25 writes both layouts.
  if (contents.members.has("oci-layout")) return ociArchiveImages(contents, tarPath, ctx);
  if (contents.members.has("manifest.json")) return dockerArchiveImages(contents, tarPath, ctx);
  throw new StoreProblem("neither oci-layout nor manifest.json: not an image archive", tarPath);
}

function ociArchiveImages(contents: TarContents, tarPath: string, ctx: ArchiveContext): ImageRecord[] {
  const index = readJsonMember(contents, "index.json", tarPath);
  const src: LayoutSource = {
    ...ctx,
    path: tarPath,
    blob(digest) {
      const { algorithm, encoded } = digestParts(digest);
      const m = resolveMember(contents, `blobs/${algorithm}/${encoded}`, tarPath);
      return verifiedJsonBlob(contents.read(m), digest, memberPath(tarPath, m.name));
    },
  };
  // A tarball's content cannot change without its size or mtime changing, so
  // an incomplete scan (a blob missing from the tar) is not retried.
  return layoutImages(index.value, memberPath(tarPath, index.member), src).records;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function dockerArchiveImages(contents: TarContents, tarPath: string, ctx: ArchiveContext): ImageRecord[] {
  const manifest = readJsonMember(contents, "manifest.json", tarPath);
  if (!Array.isArray(manifest.value)) throw new StoreProblem("manifest.json is not an array", memberPath(tarPath, manifest.member));
  const byId = new Map<string, ImageRecord>();
  manifest.value.forEach((item: unknown, i: number) => {
    let record: ImageRecord;
    try {
      record = dockerImage(contents, tarPath, item, ctx);
    } catch (e) {
      ctx.problems.skip(e, `manifest.json image ${i}`);
      return;
    }
    const existing = byId.get(record.id);
    if (existing) mergeNames(existing, record);
    else byId.set(record.id, record);
  });
  return [...byId.values()];
}

/**
 * One manifest.json item. ID = sha256 of the Config member; tags = RepoTags
 * (familiar names are normalized by the registry); no repo digest, since the
 * archive holds no registry manifest; size = config bytes + the layer
 * members' sizes (what skopeo's synthesized manifest adds up).
 */
function dockerImage(contents: TarContents, tarPath: string, item: unknown, ctx: ArchiveContext): ImageRecord {
  const where = memberPath(tarPath, "manifest.json");
  if (!isObject(item) || typeof item.Config !== "string") throw new StoreProblem("image entry has no Config path", where);
  if (!Array.isArray(item.Layers) || !item.Layers.every((l) => typeof l === "string")) {
    throw new StoreProblem("image entry has no Layers array of paths", where);
  }
  const config = readJsonMember(contents, item.Config, tarPath);
  const layerBytes = (item.Layers as string[]).reduce((n, l) => n + resolveMember(contents, l, tarPath).size, 0);
  const parsed = parseConfig(config.value);
  return {
    id: `sha256:${createHash("sha256").update(config.bytes).digest("hex")}`,
    repoTags: repoTags(item.RepoTags, where, ctx),
    repoDigests: [],
    size: config.bytes.length + layerBytes,
    user: parsed?.user,
    created: parsed?.created,
    labels: parsed?.labels,
    platform: parsed?.platform,
    config: parsed?.config,
    kind: "oci",
    source: tarPath,
  };
}

/** RepoTags that parse as references; any other is reported and left out (the image stays). */
function repoTags(value: unknown, where: string, ctx: ArchiveContext): string[] {
  if (!Array.isArray(value)) return [];
  const tags: string[] = [];
  for (const t of value) {
    const tag = typeof t === "string" ? tagOf(t) : undefined;
    if (tag) tags.push(tag);
    else ctx.problems.report(`RepoTags entry ${quote(String(t))} is not a reference`, where);
  }
  return tags;
}
