// Output formatting for the CLI, in one module: crictl's table layout and its
// protojson shape (EmitDefaultValues: every field present, int64 as strings).
import type { RefusedPlugin } from "../plugins/load";
import type { BackendHealth } from "../registry/registry";
import type { CriImage, ImageStatusAnswer } from "./source";

export type OutputFormat = "table" | "json" | "yaml";

/** crictl's truncated ID length. */
const TRUNC = 13;

/** Go's strconv.FormatFloat(x, 'g', precision, 64), which go-units uses. */
export function formatG(x: number, precision: number): string {
  if (x === 0) return "0";
  const [mantissa, expText] = x.toExponential(precision - 1).split("e") as [string, string];
  const exp = Number(expText);
  const trim = (s: string) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (exp < -4 || exp >= precision) {
    return `${trim(mantissa)}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return trim(x.toFixed(Math.max(0, precision - 1 - exp)));
}

/** go-units HumanSizeWithPrecision(size, 3): decimal units, as crictl prints. */
export function humanSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < units.length - 1) {
    size /= 1000;
    i++;
  }
  return `${formatG(size, 3)}${units[i]}`;
}

function truncateId(id: string, noTrunc: boolean): string {
  if (noTrunc) return id;
  const bare = id.startsWith("sha256:") ? id.slice("sha256:".length) : id;
  return bare.slice(0, TRUNC);
}

/** Splits at the last `:` (crictl's rule); a port colon is followed by a `/`. */
function splitTag(ref: string): [string, string] {
  const i = ref.lastIndexOf(":");
  if (i < 0 || ref.slice(i).includes("/")) return [ref, "errorRepoTag"];
  return [ref.slice(0, i), ref.slice(i + 1)];
}

function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  // tabwriter with padding 3, as crictl: the last column is not padded.
  const line = (cells: string[]) => cells.map((cell, c) => (c === cells.length - 1 ? cell : cell.padEnd(widths[c]! + 3))).join("");
  return [header, ...rows].map(line).join("\n") + "\n";
}

/** crictl's client-side order: first repoTag, then first repoDigest, then id. */
export function sortImages(images: CriImage[]): CriImage[] {
  const key = (i: CriImage) => [i.repoTags[0] ?? "", i.repoDigests[0] ?? "", i.id];
  return [...images].sort((a, b) => {
    const [ka, kb] = [key(a), key(b)];
    for (let j = 0; j < 3; j++) if (ka[j] !== kb[j]) return ka[j]! < kb[j]! ? -1 : 1;
    return 0;
  });
}

export function imagesTable(images: CriImage[], opts: { digests: boolean; noTrunc: boolean; pinned?: boolean }): string {
  const header = ["IMAGE", "TAG", ...(opts.digests ? ["DIGEST"] : []), "IMAGE ID", "SIZE", ...(opts.pinned ? ["PINNED"] : [])];
  const rows: string[][] = [];
  for (const image of sortImages(images)) {
    const digest = image.repoDigests[0]?.split("@")[1] ?? "<none>";
    const tail = [...(opts.digests ? [digest === "<none>" ? digest : truncateId(digest, opts.noTrunc)] : []), truncateId(image.id, opts.noTrunc), humanSize(image.size), ...(opts.pinned ? [String(image.pinned)] : [])];
    if (image.repoTags.length === 0) {
      const repo = image.repoDigests[0]?.split("@")[0] ?? "<none>";
      rows.push([repo, "<none>", ...tail]);
      continue;
    }
    for (const ref of image.repoTags) rows.push([...splitTag(ref), ...tail]);
  }
  return renderTable(header, rows);
}

/** protojson of an Image with default values emitted (crictl -o json). */
export function imageJson(image: CriImage): Record<string, unknown> {
  return {
    id: image.id,
    repoTags: [...image.repoTags],
    repoDigests: [...image.repoDigests],
    size: String(image.size),
    uid: image.uid ? { value: String(image.uid.value) } : null,
    username: image.username,
    spec: image.spec
      ? {
          image: image.spec.image,
          annotations: { ...(image.spec.annotations ?? {}) },
          userSpecifiedImage: image.spec.userSpecifiedImage ?? "",
          runtimeHandler: image.spec.runtimeHandler ?? "",
        }
      : null,
    pinned: image.pinned,
  };
}

/** crictl inspecti: `{"status": Image, <info key>: value}`; JSON-object values are parsed. */
export function inspectJson(answer: ImageStatusAnswer): Record<string, unknown> {
  const out: Record<string, unknown> = { status: imageJson(answer.image as CriImage) };
  for (const [k, v] of Object.entries(answer.info ?? {})) {
    if (v.startsWith("{")) {
      try {
        out[k] = JSON.parse(v);
        continue;
      } catch {
        // fall through: shown as a string
      }
    }
    out[k] = v;
  }
  return out;
}

export function serialize(value: unknown, format: "json" | "yaml"): string {
  return format === "json" ? `${JSON.stringify(value, null, 2)}\n` : Bun.YAML.stringify(value, null, 2).trimEnd() + "\n";
}

/** "no" without the content hook; "yes" when the mirror serves every image listed; else how many it serves. */
function mirrorCell(h: BackendHealth): string {
  if (!h.mirror) return "no";
  return h.mirrorImages === h.images ? "yes" : `${h.mirrorImages} of ${h.images}`;
}

/** The configured backends; then, when there are any, the refused plugins. */
export function pluginsTable(health: BackendHealth[], refused: readonly RefusedPlugin[] = []): string {
  const backends = renderTable(
    ["NAME", "TYPE", "STATE", "IMAGES", "MIRROR", "LAST ERROR"],
    // MIRROR: whether the registry mirror serves this backend's images (docs/mirror.md).
    health.map((h) => [h.name, h.type, h.hung ? `${h.state} (hung)` : h.state, String(h.images), mirrorCell(h), (h.state === "failing" ? h.lastError : h.notice) ?? ""]),
  );
  if (refused.length === 0) return backends;
  return `${backends}
${renderTable(["REFUSED PLUGIN", "REASON"], refused.map((r) => [r.path, r.reason]))}`;
}
