// A tiny bbolt file writer for the tests: it lays out pages the way bbolt's
// documented format has them (etcd-io/bbolt internal/common/page.go,
// meta.go), written here from that format and not from imagelet's reader, so
// tests can make files with branch pages, overflow pages and inline buckets,
// and then damage them (page loops, out-of-range ids, bad checksums).
// Real files made by containerd are the fixtures; these are the hostile ones.

export type Tree = Map<string, Buffer | Tree | { inline: Tree }>;

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;

function fnv(bytes: Uint8Array): bigint {
  let h = FNV_OFFSET;
  for (const b of bytes) h = BigInt.asUintN(64, (h ^ BigInt(b)) * FNV_PRIME);
  return h;
}

export interface WriteOptions {
  pageSize?: number;
  /** Leaf entries per page before the tree gets a branch page. */
  perLeaf?: number;
  txid?: bigint;
}

export interface Written {
  file: Buffer;
  pageSize: number;
  /** Page ids by role, for damaging them. */
  pages: { id: number; kind: "branch" | "leaf"; bucket: string; overflow: number }[];
  rootPage: number;
}

/** Go binary.PutVarint (zigzag). */
export function varint(n: number): Buffer {
  let ux = BigInt(n) << 1n;
  if (n < 0) ux = ~ux;
  ux = BigInt.asUintN(64, ux);
  const out: number[] = [];
  while (ux >= 0x80n) {
    out.push(Number(ux & 0x7fn) | 0x80);
    ux >>= 7n;
  }
  out.push(Number(ux));
  return Buffer.from(out);
}

/** Go time.Time MarshalBinary version 1, UTC. */
export function goTime(iso: string): Buffer {
  const ms = Date.parse(iso);
  const b = Buffer.alloc(15);
  b[0] = 1;
  b.writeBigInt64BE(BigInt(Math.floor(ms / 1000)) + 62135596800n, 1);
  b.writeInt32BE((ms % 1000) * 1e6, 9);
  b.writeInt16BE(-1, 13);
  return b;
}

function leafBytes(entries: [string, Buffer, number][]): Buffer {
  // header + elements + data
  const head = Buffer.alloc(16 + entries.length * 16);
  head.writeUInt16LE(0x02, 8);
  head.writeUInt16LE(entries.length, 10);
  const data: Buffer[] = [];
  let offset = head.length;
  entries.forEach(([k, v, flags], i) => {
    const e = 16 + i * 16;
    const key = Buffer.from(k, "utf8");
    head.writeUInt32LE(flags, e);
    head.writeUInt32LE(offset - e, e + 4);
    head.writeUInt32LE(key.length, e + 8);
    head.writeUInt32LE(v.length, e + 12);
    data.push(key, v);
    offset += key.length + v.length;
  });
  return Buffer.concat([head, ...data]);
}

/** Lays out a tree of buckets as a bbolt file (two metas, a freelist page, then the pages). */
export function writeBolt(root: Tree, opts: WriteOptions = {}): Written {
  const pageSize = opts.pageSize ?? 4096;
  const perLeaf = opts.perLeaf ?? 1000;
  const pages: Buffer[] = []; // index = page id - 3
  const info: Written["pages"] = [];
  let next = 3;

  function alloc(body: Buffer, kind: "branch" | "leaf", bucket: string): number {
    const id = next;
    const count = Math.max(1, Math.ceil(body.length / pageSize));
    const buf = Buffer.alloc(count * pageSize);
    body.copy(buf);
    buf.writeBigUInt64LE(BigInt(id), 0);
    buf.writeUInt32LE(count - 1, 12);
    pages.push(buf);
    for (let i = 1; i < count; i++) pages.push(Buffer.alloc(0));
    info.push({ id, kind, bucket, overflow: count - 1 });
    next += count;
    return id;
  }

  function bucketValue(tree: Tree, path: string): Buffer {
    const root = writeTree(tree, path);
    const h = Buffer.alloc(16);
    h.writeBigUInt64LE(BigInt(root), 0);
    return h;
  }

  function entriesOf(tree: Tree, path: string): [string, Buffer, number][] {
    return [...tree.entries()]
      .sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .map(([k, v]) => {
        if (Buffer.isBuffer(v)) return [k, v, 0];
        if (v instanceof Map) return [k, bucketValue(v, `${path}/${k}`), 1];
        const inline = Buffer.concat([Buffer.alloc(16), leafBytes(entriesOf(v.inline, `${path}/${k}`))]);
        return [k, inline, 1];
      });
  }

  function writeTree(tree: Tree, path: string): number {
    const entries = entriesOf(tree, path);
    if (entries.length <= perLeaf) return alloc(leafBytes(entries), "leaf", path);
    const children: [string, number][] = [];
    for (let i = 0; i < entries.length; i += perLeaf) {
      const chunk = entries.slice(i, i + perLeaf);
      children.push([chunk[0]![0], alloc(leafBytes(chunk), "leaf", path)]);
    }
    const head = Buffer.alloc(16 + children.length * 16);
    head.writeUInt16LE(0x01, 8);
    head.writeUInt16LE(children.length, 10);
    const keys: Buffer[] = [];
    let offset = head.length;
    children.forEach(([k, id], i) => {
      const e = 16 + i * 16;
      const key = Buffer.from(k, "utf8");
      head.writeUInt32LE(offset - e, e);
      head.writeUInt32LE(key.length, e + 4);
      head.writeBigUInt64LE(BigInt(id), e + 8);
      keys.push(key);
      offset += key.length;
    });
    return alloc(Buffer.concat([head, ...keys]), "branch", path);
  }

  const rootPage = writeTree(root, "");
  const highWater = next;
  const file = Buffer.alloc(highWater * pageSize);
  for (let i = 0; i < 2; i++) {
    const p = i * pageSize;
    file.writeBigUInt64LE(BigInt(i), p);
    file.writeUInt16LE(0x04, p + 8);
    const m = p + 16;
    file.writeUInt32LE(0xed0cdaed, m);
    file.writeUInt32LE(2, m + 4);
    file.writeUInt32LE(pageSize, m + 8);
    file.writeBigUInt64LE(BigInt(rootPage), m + 16);
    file.writeBigUInt64LE(2n, m + 32);
    file.writeBigUInt64LE(BigInt(highWater), m + 40);
    file.writeBigUInt64LE((opts.txid ?? 10n) - BigInt(1 - i), m + 48);
    file.writeBigUInt64LE(fnv(file.subarray(m, m + 56)), m + 56);
  }
  // page 2: an empty freelist
  file.writeBigUInt64LE(2n, 2 * pageSize);
  file.writeUInt16LE(0x10, 2 * pageSize + 8);
  pages.forEach((buf, i) => buf.copy(file, (i + 3) * pageSize));
  return { file, pageSize, pages: info, rootPage };
}

/** Rewrites meta page `slot`'s checksum after the test changed its fields. */
export function resealMeta(file: Buffer, pageSize: number, slot: number): void {
  const m = slot * pageSize + 16;
  file.writeBigUInt64LE(fnv(file.subarray(m, m + 56)), m + 56);
}

/** containerd's image record as metadata/images.go writes it. */
export function imageRecord(target: { digest: string; mediaType: string; size: number }, labels: Record<string, string> = {}): Tree {
  const t: Tree = new Map([
    ["digest", Buffer.from(target.digest)],
    ["mediatype", Buffer.from(target.mediaType)],
    ["size", varint(target.size)],
  ]);
  const tree: Tree = new Map<string, Buffer | Tree | { inline: Tree }>([
    ["createdat", goTime("2024-01-02T03:04:05.000Z")],
    ["updatedat", goTime("2024-01-02T03:04:05.000Z")],
    ["target", { inline: t }],
  ]);
  if (Object.keys(labels).length > 0) tree.set("labels", { inline: new Map(Object.entries(labels).map(([k, v]) => [k, Buffer.from(v)])) });
  // bbolt never inlines a bucket that holds buckets, so an image record has a page of its own.
  return tree;
}
