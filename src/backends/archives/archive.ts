// The images of one image tarball, from its listing and its small JSON
// members (docs/backends.md#archives). An archive with `oci-layout` is an
// OCI layout in a tar (oci-archive, Docker >= 25 `docker save`, `ctr export`)
// and is read exactly as the oci-layout backend reads a directory; otherwise
// it is a docker-archive (legacy `docker save`, skopeo, podman save), read
// from manifest.json.
import type { ContentBody, ContentDescriptor, ImageRecord, Logger, Platform } from "../../backend/contract";
import { rootfsDiffIds, sha256Digest } from "../../model/digest";
import { quote } from "../../model/reference";
import { StoreProblem, parseJson, type ProblemLog } from "../common/files";
import { blobName, verifiedJsonBlob } from "../common/oci-blobs";
import { layoutImages, mergeNames, parseConfig, tagOf, type LayoutSource } from "../common/oci-images";
import { reachableContent } from "../common/oci-reach";
import { OCI_CONFIG, OCI_LAYER_TAR, writeManifest, writtenRepoDigests } from "../common/written-manifest";
import { gunzippedMember, memberBytes, type TarballFile } from "./member-stream";
import { resolveMember, type TarContents, type TarMember } from "./tar";
import { isRecord } from "../../model/json";

export interface ArchiveContext {
  /** Repository for bare-tag ref.names in an OCI archive. */
  repository: string;
  platform: Platform;
  problems: ProblemLog;
  log: Logger;
  backend: string;
}

/** Where the mirror finds one piece of an image's content in its tarball. */
export interface ContentPart {
  descriptor: ContentDescriptor;
  /** Held in memory: the manifest imagelet writes for a docker-archive image, a JSON blob of a gzipped tarball. */
  bytes?: Buffer;
  /** The member holding it: as stored, or the layer's tar gzip-compressed when `gunzip`. */
  member?: TarMember;
  /** Served decompressed, so that its digest is the layer's diff_id. */
  gunzip?: boolean;
  /** Why it cannot be served (not in the tarball, or of another length); logged when asked for. */
  problem?: StoreProblem;
}

/**
 * What the mirror is given for a part: bytes held in memory; a member of a
 * plain tar as a region of the tarball (sent by the OS, byte for byte); a
 * member of a gzipped tarball, or a compressed layer, as a stream.
 */
export function contentBody(file: TarballFile, part: ContentPart): ContentBody {
  const { mediaType, size } = part.descriptor;
  if (part.bytes) return { mediaType, size, bytes: part.bytes };
  const member = part.member!;
  if (part.gunzip) return { mediaType, size, open: (start, signal) => gunzippedMember(file, member, start, size, signal) };
  if (file.gzip) return { mediaType, size, open: (start, signal) => memberBytes(file, member, start, signal) };
  return { mediaType, size, file: { path: file.real, offset: member.offset } };
}

/** One tarball's images, and by image ID what each reaches, by digest. */
export interface ArchiveImages {
  records: ImageRecord[];
  content: Map<string, Map<string, ContentPart>>;
}

/** How problems inside a tarball are located: `<tarball>!/<member>`. */
export const memberPath = (tarPath: string, member: string) => `${tarPath}!/${member}`;

function readJsonMember(contents: TarContents, name: string, tarPath: string): { value: unknown; bytes: Buffer; member: TarMember } {
  const m = resolveMember(contents, name, tarPath);
  const bytes = contents.read(m);
  return { value: parseJson(bytes, memberPath(tarPath, m.name)), bytes, member: m };
}

/** The images of one tarball; throws StoreProblem when the tarball as a whole is unusable. */
export function archiveImages(contents: TarContents, file: TarballFile, ctx: ArchiveContext): ArchiveImages {
  // containerd's importer checks oci-layout first too: Docker >= 25 writes both layouts.
  if (contents.members.has("oci-layout")) return ociArchiveImages(contents, file, ctx);
  if (contents.members.has("manifest.json")) return dockerArchiveImages(contents, file, ctx);
  throw new StoreProblem("neither oci-layout nor manifest.json: not an image archive", file.path);
}

function ociArchiveImages(contents: TarContents, file: TarballFile, ctx: ArchiveContext): ArchiveImages {
  const tarPath = file.path;
  const index = readJsonMember(contents, "index.json", tarPath);
  const blob = (digest: string) => {
    const m = resolveMember(contents, blobName(digest), tarPath);
    return verifiedJsonBlob(contents.read(m), digest, memberPath(tarPath, m.name));
  };
  const src: LayoutSource = { ...ctx, path: tarPath, blob };
  // A tarball's content cannot change without its size or mtime changing, so
  // an incomplete scan (a blob missing from the tar) is not retried.
  const { records, roots } = layoutImages(index.value, memberPath(tarPath, index.member.name), src);
  // What each image reaches is found now, while the tarball's listing (and a gzipped one's JSON) is at hand.
  const content = new Map<string, Map<string, ContentPart>>();
  for (const [id, descriptors] of roots) {
    const parts = new Map<string, ContentPart>();
    for (const [digest, descriptor] of reachableContent(descriptors, (d) => blob(d).value)) parts.set(digest, blobPart(contents, file, descriptor));
    content.set(id, parts);
  }
  return { records, content };
}

/** Where a blob of an OCI layout in a tarball is. */
function blobPart(contents: TarContents, file: TarballFile, descriptor: ContentDescriptor): ContentPart {
  let member: TarMember;
  try {
    member = resolveMember(contents, blobName(descriptor.digest), file.path);
  } catch (e) {
    if (e instanceof StoreProblem) return { descriptor, problem: e };
    throw e;
  }
  if (member.size !== descriptor.size) {
    return { descriptor, problem: new StoreProblem(`${member.size} bytes where its descriptor says ${descriptor.size}`, memberPath(file.path, member.name)) };
  }
  return { descriptor, member, bytes: keptBytes(contents, file, member) };
}

/** A gzipped tarball's JSON member, kept from its scan: serving it then needs no second decompression. */
function keptBytes(contents: TarContents, file: TarballFile, member: TarMember): Buffer | undefined {
  if (!file.gzip) return undefined;
  try {
    return contents.read(member);
  } catch (e) {
    if (e instanceof StoreProblem) return undefined; // a layer: streamed when asked for
    throw e;
  }
}

function dockerArchiveImages(contents: TarContents, file: TarballFile, ctx: ArchiveContext): ArchiveImages {
  const tarPath = file.path;
  const manifest = readJsonMember(contents, "manifest.json", tarPath);
  if (!Array.isArray(manifest.value)) throw new StoreProblem("manifest.json is not an array", memberPath(tarPath, manifest.member.name));
  const byId = new Map<string, ImageRecord>();
  const content = new Map<string, Map<string, ContentPart>>();
  for (const [i, item] of (manifest.value as unknown[]).entries()) {
    let image: { record: ImageRecord; parts?: Map<string, ContentPart> };
    try {
      image = dockerImage(contents, file, item, ctx);
    } catch (e) {
      ctx.problems.skip(e, `manifest.json image ${i}`);
      continue;
    }
    const { record, parts } = image;
    const existing = byId.get(record.id);
    if (existing) mergeNames(existing, record);
    else byId.set(record.id, record);
    if (parts && !content.has(record.id)) content.set(record.id, parts);
  }
  return { records: [...byId.values()], content };
}

/**
 * One manifest.json item. ID = sha256 of the Config member; tags = RepoTags
 * (familiar names are normalized by the registry); repo digests = each tag's
 * repository at the manifest imagelet writes (written-manifest.ts
 * writtenRepoDigests), since the archive holds no registry manifest, and none
 * when it cannot be written; size = config bytes + the layer members' sizes
 * (what skopeo's synthesized manifest adds up). On the mirror: that written
 * manifest, the config member, and each layer member as its uncompressed tar
 * (see layerParts).
 */
function dockerImage(contents: TarContents, file: TarballFile, item: unknown, ctx: ArchiveContext): { record: ImageRecord; parts?: Map<string, ContentPart> } {
  const tarPath = file.path;
  const where = memberPath(tarPath, "manifest.json");
  if (!isRecord(item) || typeof item.Config !== "string") throw new StoreProblem("image entry has no Config path", where);
  if (!Array.isArray(item.Layers) || !item.Layers.every((l) => typeof l === "string")) {
    throw new StoreProblem("image entry has no Layers array of paths", where);
  }
  const config = readJsonMember(contents, item.Config, tarPath);
  const layers = (item.Layers as string[]).map((l) => resolveMember(contents, l, tarPath));
  const parsed = parseConfig(config.value);
  const id = sha256Digest(config.bytes);
  const record: ImageRecord = {
    id,
    repoTags: repoTags(item.RepoTags, where, ctx),
    repoDigests: [],
    size: config.bytes.length + layers.reduce((n, m) => n + m.size, 0),
    user: parsed?.user,
    created: parsed?.created,
    labels: parsed?.labels,
    platform: parsed?.platform,
    config: parsed?.config,
    kind: "oci",
    source: tarPath,
  };
  const diffIds = rootfsDiffIds(config.value);
  if (typeof diffIds === "string" || diffIds.length !== layers.length) {
    // Listed all the same; only the mirror cannot serve it (it could not say what each layer is).
    ctx.problems.report(
      `image ${id} is not served on the mirror: ${typeof diffIds === "string" ? diffIds : `its config's rootfs.diff_ids name ${diffIds.length} layers, manifest.json ${layers.length}`}`,
      memberPath(tarPath, config.member.name),
    );
    return { record };
  }
  // A layer kept compressed is served decompressed. Its length is the gzip trailer's (tar.ts
  // TarMember.isize), not measured: measuring is decompressing every layer at every first scan.
  // Where the trailer is wrong (over 4 GiB, several gzip streams) the bytes served fail the
  // mirror's digest check and the pull fails loudly.
  const sized = layers.map((member, i) => ({ diffId: diffIds[i]!, size: member.gzip ? member.isize! : member.size, member }));
  const written = writeManifest({ digest: id, size: config.bytes.length }, sized);
  const parts = new Map<string, ContentPart>();
  parts.set(written.descriptor.digest, { descriptor: written.descriptor, bytes: written.bytes });
  parts.set(id, { descriptor: { mediaType: OCI_CONFIG, digest: id, size: config.bytes.length }, member: config.member, bytes: file.gzip ? config.bytes : undefined });
  for (const { diffId, size, member } of sized) {
    parts.set(diffId, { descriptor: { mediaType: OCI_LAYER_TAR, digest: diffId, size }, member, gunzip: member.gzip === true });
  }
  record.target = written.descriptor;
  record.repoDigests = writtenRepoDigests(record.repoTags, written.descriptor);
  return { record, parts };
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
