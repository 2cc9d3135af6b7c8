// CRC-64/GO-ISO: Go's hash/crc64 with the ISO table, which tar-split uses to
// fingerprint every file payload (storage.CRCTable; reference-layer-
// reconstruction.md §1). Reflected polynomial 0xD800000000000000, initial value
// and final XOR all ones; check value ("123456789") b90956c775a41001. A
// tar-split FileType payload is the 8-byte big-endian sum.
//
// Hand-written because the one npm implementation (js-crc, model
// crc_64_go_iso) ran at ~67 MB/s, slower than reading the files. This one is
// slicing-by-8 with the 64-bit state kept as two 32-bit halves, so the loop
// has no BigInt: measured at 510-910 MB/s under Bun 1.4.5 on the shared
// 2-vCPU development machine (256 MiB in 1 MiB updates, three rounds),
// against 770-1,090 MB/s for Bun's sha256 of the same buffer, so checking a
// file costs about what the mirror's digest of it does.

/** 8 tables × 256 entries × (lo, hi): entry k,i at index (k * 256 + i) * 2. */
const TABLES = (() => {
  const t = new Uint32Array(8 * 256 * 2);
  // Reflected ISO polynomial x^64 + x^4 + x^3 + x + 1: 0xD800000000000000 → hi 0xD8000000, lo 0.
  const polyHi = 0xd8000000;
  for (let i = 0; i < 256; i++) {
    let lo = i;
    let hi = 0;
    for (let bit = 0; bit < 8; bit++) {
      const carry = lo & 1;
      lo = ((lo >>> 1) | (hi << 31)) >>> 0;
      hi = hi >>> 1;
      if (carry) hi = (hi ^ polyHi) >>> 0;
    }
    t[i * 2] = lo;
    t[i * 2 + 1] = hi;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      const prev = ((k - 1) * 256 + i) * 2;
      const lo = t[prev]!;
      const hi = t[prev + 1]!;
      const idx = (lo & 0xff) * 2;
      t[(k * 256 + i) * 2] = (((lo >>> 8) | (hi << 24)) ^ t[idx]!) >>> 0;
      t[(k * 256 + i) * 2 + 1] = ((hi >>> 8) ^ t[idx + 1]!) >>> 0;
    }
  }
  return t;
})();

/** An incremental CRC-64/GO-ISO. */
export class Crc64 {
  // The running register, already inverted (Go: crc = ^crc on entry and exit).
  private lo = 0xffffffff;
  private hi = 0xffffffff;

  update(data: Uint8Array): this {
    const t = TABLES;
    let lo = this.lo;
    let hi = this.hi;
    let i = 0;
    const n = data.length;
    const end8 = n - (n % 8);
    for (; i < end8; i += 8) {
      lo ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
      hi ^= data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24);
      const a = (7 * 256 + (lo & 0xff)) << 1;
      const b = (6 * 256 + ((lo >>> 8) & 0xff)) << 1;
      const c = (5 * 256 + ((lo >>> 16) & 0xff)) << 1;
      const d = (4 * 256 + (lo >>> 24)) << 1;
      const e = (3 * 256 + (hi & 0xff)) << 1;
      const f = (2 * 256 + ((hi >>> 8) & 0xff)) << 1;
      const g = (1 * 256 + ((hi >>> 16) & 0xff)) << 1;
      const h = (hi >>> 24) << 1;
      lo = t[a]! ^ t[b]! ^ t[c]! ^ t[d]! ^ t[e]! ^ t[f]! ^ t[g]! ^ t[h]!;
      hi = t[a + 1]! ^ t[b + 1]! ^ t[c + 1]! ^ t[d + 1]! ^ t[e + 1]! ^ t[f + 1]! ^ t[g + 1]! ^ t[h + 1]!;
    }
    for (; i < n; i++) {
      const idx = ((lo ^ data[i]!) & 0xff) << 1;
      lo = ((lo >>> 8) | (hi << 24)) ^ t[idx]!;
      hi = (hi >>> 8) ^ t[idx + 1]!;
    }
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
    return this;
  }

  /** The 8-byte big-endian sum, as tar-split stores it (base64 in `payload`). */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((~this.hi) >>> 0, 0);
    out.writeUInt32BE((~this.lo) >>> 0, 4);
    return out;
  }

  /** The sum as 16 hex digits (catalogue form). */
  hex(): string {
    return this.digest().toString("hex");
  }
}

/** The CRC-64/GO-ISO sum of some bytes, 8 bytes big-endian. */
export function crc64(data: Uint8Array): Buffer {
  return new Crc64().update(data).digest();
}
