// Small builders shared by the unit tests.
import type { ImageRecord, Logger } from "../../src/backend/contract";
import { validateRecord, type ValidRecord } from "../../src/registry/validate";

export const hex = (c: string) => c.repeat(64).slice(0, 64);
export const id = (c: string) => `sha256:${hex(c)}`;

export function record(over: Partial<ImageRecord> & { id: string }): ImageRecord {
  return { repoTags: [], repoDigests: [], size: 100, kind: "oci", ...over };
}

export function valid(over: Partial<ImageRecord> & { id: string }): ValidRecord {
  return validateRecord(record(over));
}

/** A logger that keeps its lines, for asserting what was logged. */
export function memoryLogger(): Logger & { lines: { level: string; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
