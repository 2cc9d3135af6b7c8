// The `open` bodies whose whole stream hashed to their digest, by the key
// the body gives for its exact inputs (ContentBody.verifiedAs). A body whose
// key is here is streamed without hashing: the body itself then checks that
// its inputs are still the ones the key named (a re-created layer: its
// tar-split's and members' file identities, src/backends/common/layer-inputs.ts).
// Bounded: the least recently used key is dropped first, and a dropped key
// only costs one more hashed stream (model/recent-keys.ts).
import { RecentKeys } from "../model/recent-keys";

export class VerifiedBodies {
  private readonly known: RecentKeys;

  constructor(limit = 4096) {
    this.known = new RecentKeys(limit);
  }

  /** Whether a stream under `key` hashed to `digest` before. */
  has(digest: string, key: string): boolean {
    return this.known.has(`${digest}\0${key}`);
  }

  /** Records that a whole stream under `key` hashed to `digest`. */
  remember(digest: string, key: string): void {
    this.known.add(`${digest}\0${key}`);
  }
}
