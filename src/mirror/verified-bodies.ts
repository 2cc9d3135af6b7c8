// The `open` bodies whose whole stream hashed to their digest, by the key
// the body gives for its exact inputs (ContentBody.verifiedAs). A body whose
// key is here is streamed without hashing: the body itself then checks that
// its inputs are still the ones the key named (a re-created layer: its
// tar-split's and members' file identities, src/backends/common/layer-inputs.ts).
// Bounded: the least recently used key is dropped first, and a dropped key
// only costs one more hashed stream.

export class VerifiedBodies {
  private readonly known = new Set<string>();

  constructor(private readonly limit = 4096) {}

  /** Whether a stream under `key` hashed to `digest` before. */
  has(digest: string, key: string): boolean {
    const entry = `${digest}\0${key}`;
    if (!this.known.has(entry)) return false;
    this.known.delete(entry);
    this.known.add(entry);
    return true;
  }

  /** Records that a whole stream under `key` hashed to `digest`. */
  remember(digest: string, key: string): void {
    const entry = `${digest}\0${key}`;
    this.known.delete(entry);
    if (this.known.size >= this.limit) this.known.delete(this.known.values().next().value!);
    this.known.add(entry);
  }
}
