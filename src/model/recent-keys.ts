// A bounded set of string keys, the least recently used dropped first: the
// memory of checks that passed (model/verified-files.ts,
// mirror/verified-bodies.ts), where a dropped key only costs one more check.

export class RecentKeys {
  private readonly known = new Set<string>();

  constructor(private readonly limit: number) {}

  /** Whether `key` is held; a hit makes it the most recently used. */
  has(key: string): boolean {
    if (!this.known.has(key)) return false;
    this.known.delete(key);
    this.known.add(key);
    return true;
  }

  /** Holds `key` as the most recently used, dropping the least recently used when full. */
  add(key: string): void {
    this.known.delete(key);
    if (this.known.size >= this.limit) this.known.delete(this.known.values().next().value!);
    this.known.add(key);
  }

  delete(key: string): void {
    this.known.delete(key);
  }
}
