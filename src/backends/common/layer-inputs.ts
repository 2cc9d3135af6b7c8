// What a re-created layer's bytes are made from, so the mirror can skip
// hashing a layer it already verified (ContentBody.verifiedAs): the
// tar-split's identity and, in stream order, each member file's identity
// (dev, inode, size, mtime, ctime: model/verified-files.ts). They are only
// known as a stream reads them, so a whole stream records them, and the
// layer's key names the inputs its last whole stream recorded. A stream the
// mirror opens trusted (that key hashed to the digest before) checks every
// input against the record: at open, before any of its bytes are yielded,
// and by fstat again after it was read. Any difference throws, and the
// caller forgets the record, so the next request is hashed again.
// Recorded only when every input's ctime was VERIFIED_AGE_NS old when the
// stream began (two writes within one tick of the kernel's coarse clock can
// leave the same ctime).
import type { BigIntStats } from "node:fs";
import { fileIdentity, nowNs, oldEnough, type FileIdentity } from "../../model/verified-files";
import { StoreProblem } from "./files";

/** A layer's inputs as one whole stream found them. */
export interface LayerInputs {
  tarSplit: string;
  /** Identity keys of the members with a payload, in stream order. */
  members: string[];
}

/** The key the mirror remembers for a layer made from exactly `inputs`; `place` names the layer's paths. */
export function inputsKey(place: string, inputs: LayerInputs): string {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(`re-created layer\0${place}\0${inputs.tarSplit}\0${inputs.members.length}`);
  for (const member of inputs.members) hasher.update(`\0${member}`);
  return `layer:${hasher.digest("hex")}`;
}

/** The inputs of each layer's last whole stream, by the layer's place; the oldest dropped first. */
export class LayerRecords {
  private readonly known = new Map<string, LayerInputs>();

  constructor(private readonly limit = 256) {}

  get(place: string): LayerInputs | undefined {
    return this.known.get(place);
  }

  set(place: string, inputs: LayerInputs): void {
    this.known.delete(place);
    if (this.known.size >= this.limit) this.known.delete(this.known.keys().next().value!);
    this.known.set(place, inputs);
  }

  /** Drops the record, if it is still `inputs` (a newer stream may have replaced it). */
  forget(place: string, inputs: LayerInputs): void {
    if (this.known.get(place) === inputs) this.known.delete(place);
  }
}

/**
 * One stream's inputs: checked against `expected` when the stream is
 * trusted, recorded otherwise (and when trusted: the same identities).
 */
export class StreamInputs {
  private readonly began = nowNs();
  private tarSplitKey?: string;
  private readonly members: string[] = [];
  private young = false;

  constructor(private readonly expected?: LayerInputs) {}

  get trusted(): boolean {
    return this.expected !== undefined;
  }

  /** The tar-split, as opened. */
  tarSplit(identity: FileIdentity, path: string): void {
    if (this.expected && identity.key !== this.expected.tarSplit) throw changedSince("tar-split", path);
    this.note(identity);
    this.tarSplitKey = identity.key;
  }

  /** A member with a payload, as opened: when trusted, it must be the file recorded at its place. */
  member(identity: FileIdentity, path: string): void {
    if (this.expected && this.expected.members[this.members.length] !== identity.key) throw changedSince("layer member", path);
    this.note(identity);
    this.members.push(identity.key);
  }

  /** After reading an input: fstat (or stat of its path) must give the identity it was opened with. */
  static unchanged(opened: FileIdentity, now: BigIntStats, path: string, what: string): void {
    if (fileIdentity(now).key !== opened.key) throw new StoreProblem(`${what} changed while it was read`, path);
  }

  /** At the stream's end: the inputs to record, if all were old enough (and, trusted, all were there). */
  complete(path: string): LayerInputs | undefined {
    if (this.expected && this.members.length !== this.expected.members.length) throw changedSince("tar-split", path);
    if (this.young || this.tarSplitKey === undefined) return undefined;
    return { tarSplit: this.tarSplitKey, members: this.members };
  }

  private note(identity: FileIdentity): void {
    if (!oldEnough(identity, this.began)) this.young = true;
  }
}

function changedSince(what: string, path: string): StoreProblem {
  return new StoreProblem(`${what} is not the file the layer was verified with; the layer is checked again on the next request`, path);
}
