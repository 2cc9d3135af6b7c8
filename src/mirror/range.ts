// The one `Range` a blob request may carry (RFC 9110 14.1.2). Only a single
// `bytes=` range is honoured: a multi-range request gets the whole blob with
// 200 (containers/image splits it itself), and so does a header this does not
// understand, as RFC 9110 lets a server ignore Range.

/** Inclusive byte positions, as Content-Range writes them. */
export interface ByteRange {
  start: number;
  end: number;
}

/** `whole`: send everything (200); a ByteRange: 206; `unsatisfiable`: 416. */
export type RangeAnswer = "whole" | "unsatisfiable" | ByteRange;

const SINGLE = /^bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*$/i;

export function parseRange(header: string | null, size: number): RangeAnswer {
  if (header === null) return "whole";
  const m = SINGLE.exec(header);
  if (!m) return "whole";
  const [, first, last] = m as unknown as [string, string, string];
  if (first === "" && last === "") return "whole";
  if (first === "") {
    // bytes=-N: the last N bytes.
    const n = Number(last);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(first);
  if (!Number.isSafeInteger(start) || start >= size) return "unsatisfiable";
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return "whole"; // a syntactically invalid range is ignored
  return { start, end };
}

export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}
