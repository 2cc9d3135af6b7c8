// The parts of hpack.js (2.1.6, untyped) that h2-authority.ts uses: its
// bit-level decoder (integers, literal and Huffman strings) and its header
// table (static + dynamic, with eviction). The stream wrappers
// (decompressor/compressor) are not used: they push one object per header
// through a readable-stream, which costs more than the whole block decode.
declare module "hpack.js" {
  interface HpackEntry {
    name: string;
    value: string;
    nameSize: number;
    totalSize: number;
  }
  interface HpackDecoder {
    push(chunk: Uint8Array): void;
    isEmpty(): boolean;
    decodeBit(): number;
    decodeInt(): number;
    /** A Buffer for a plain literal, an array of octets for a Huffman-coded one. */
    decodeStr(): Uint8Array | number[];
  }
  interface HpackTable {
    lookup(index: number): HpackEntry;
    add(name: string, value: string, nameSize: number, valueSize: number): void;
    updateSize(size: number): void;
  }
  const hpack: {
    decoder: { create(): HpackDecoder };
    table: { create(options: { maxSize: number }): HpackTable };
    "static-table": { table: HpackEntry[] };
  };
  export = hpack;
}
