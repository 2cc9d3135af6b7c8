// A meta.db that never stands still long enough for a whole read (containerd
// committing faster than a read of its file takes): the backend keeps its last
// whole answer and tries again, backing off, not every 100 ms for good.
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { BoltError } from "../../src/backends/containerd/bbolt";
import { ContainerdStore } from "../../src/backends/containerd/index";
import type { MetadataSnapshot } from "../../src/backends/containerd/metadata";
import { memoryLogger } from "./helpers";

class BusyStore extends ContainerdStore {
  changing = false;
  reads = 0;
  protected override readMetadata(): MetadataSnapshot {
    this.reads++;
    if (this.changing) throw new BoltError("changing", "a new commit landed during each of 5 reads");
    return super.readMetadata();
  }
  /** What a changed stat does: the next list reads again. */
  forget(): void {
    (this as unknown as { cached?: unknown }).cached = undefined;
  }
}

describe("a meta.db that keeps changing through every read", () => {
  test("the last answer is served, and the read is tried again less and less often", async () => {
    const root = resolve(import.meta.dir, "../fixtures/containerd/root");
    const s = new BusyStore({ root, namespace: "k8s.io" }, { name: "ctd", log: memoryLogger(), platform: { os: "linux", architecture: "amd64" } });
    const first = s.list();
    expect(first.length).toBeGreaterThan(5);
    s.changing = true;
    const answers: unknown[] = [];
    const stop = s.watch(() => {
      // What the registry does on a notification: list again.
      s.forget();
      answers.push(s.list());
    });
    try {
      s.forget();
      expect(s.list()).toBe(first);
      await Bun.sleep(1600);
    } finally {
      stop();
    }
    // Every 100 ms would be about 15; doubling from 100 ms (100 + 200 + 400 + 800) is 4 in 1.6 s.
    expect(answers.length).toBeGreaterThanOrEqual(3);
    expect(answers.length).toBeLessThanOrEqual(5);
    expect(answers.every((a) => a === first)).toBe(true);
    // A read that succeeds starts the interval from 100 ms again.
    s.changing = false;
    s.forget();
    expect(s.list()).toBe(first);
    expect((s as unknown as { retryMs: number }).retryMs).toBe(100);
  });
});
