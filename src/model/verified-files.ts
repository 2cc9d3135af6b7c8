// Files whose bytes this process has checked (a blob's sha256, a layer
// member's CRC-64), remembered by the identity of the opened file so a later
// request can skip the check. The one rule for both the mirror's file bodies
// (src/mirror/body.ts) and re-created layers (backends/common/tar-split.ts).
//
// An identity is dev, inode, size, mtime and ctime from fstat of the opened
// descriptor. Any write to a file sets its ctime to "now" (the kernel sets
// it; no user can set it back), so a remembered identity still matching
// means unchanged bytes, with one catch: two writes within one tick of the
// kernel's coarse timestamp clock leave the same ctime. So a file is only
// remembered when its ctime was already VERIFIED_AGE_NS old when the check
// began: a file still being written is checked again next time.
import type { BigIntStats } from "node:fs";
import { RecentKeys } from "./recent-keys";

/** How old a file's ctime must be, when its check begins, for the check to be remembered. */
export const VERIFIED_AGE_NS = 2_000_000_000n;

/** The identity of an opened file, from its fstat (bigint: nanosecond times). */
export interface FileIdentity {
  key: string;
  ctimeNs: bigint;
}

export function fileIdentity(st: BigIntStats): FileIdentity {
  return { key: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`, ctimeNs: st.ctimeNs };
}

/** The wall clock in nanoseconds, as ctime counts: take it before reading the bytes you will check. */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/** Whether a file's ctime was already VERIFIED_AGE_NS old when a check of it began at `beganNs`: only then is the check remembered. */
export function oldEnough(identity: FileIdentity, beganNs: bigint): boolean {
  return beganNs - identity.ctimeNs >= VERIFIED_AGE_NS;
}

/** Checked (what, identity) pairs, least recently used dropped first. */
export class VerifiedFiles {
  private readonly known: RecentKeys;

  constructor(limit = 4096) {
    this.known = new RecentKeys(limit);
  }

  /** Whether `what` (a digest, a CRC) was checked against the file with this identity. */
  has(what: string, identity: FileIdentity): boolean {
    return this.known.has(`${what}\0${identity.key}`);
  }

  /** Records a check that passed and began at `beganNs`, if the file was old enough then. */
  remember(what: string, identity: FileIdentity, beganNs: bigint): void {
    if (!oldEnough(identity, beganNs)) return;
    this.known.add(`${what}\0${identity.key}`);
  }

  forget(what: string, identity: FileIdentity): void {
    this.known.delete(`${what}\0${identity.key}`);
  }
}
