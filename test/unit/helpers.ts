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

/** One HTTP/2 frame (RFC 9113 §4.1), for the connection-layer tests. */
export function h2Frame(type: number, flags: number, stream: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** Reads a stream to its end: the bytes, and the error if it ended in one. */
export async function drain(stream: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; error?: string }> {
  const parts: Uint8Array[] = [];
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: (e as Error).message };
  }
  return { bytes: Buffer.concat(parts) };
}
