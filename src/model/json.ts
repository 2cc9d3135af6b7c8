// Shapes of parsed JSON that every store reader checks before it looks inside.

/** A JSON object: not null, not an array. Store files and requests are parsed to `unknown`, then checked with this. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
