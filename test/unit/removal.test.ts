import { describe, expect, test } from "bun:test";
import { RemovalRefused, type Backend, type ImageRecord } from "../../src/backend/contract";
import { BackendRegistry, RemovalFailedError, RemovalRefusedError } from "../../src/registry/registry";
import { id, memoryLogger, record } from "./helpers";

/** An in-memory writable store; list() can be held open to stand for a rescan in progress. */
function memoryStore(images: ImageRecord[], opts: { writable?: boolean } = {}) {
  let held: Promise<void> | undefined;
  const removed: string[] = [];
  const store = {
    images,
    removed,
    /** The next list() reads the store, then answers only after release(). */
    holdNextList() {
      let release!: () => void;
      held = new Promise<void>((r) => (release = r));
      return { release };
    },
  };
  const backend: Backend = {
    writable: opts.writable ?? true,
    async list() {
      const snapshot = [...store.images];
      const gate = held;
      held = undefined;
      if (gate) await gate;
      return snapshot;
    },
    remove(imageId) {
      removed.push(imageId);
      store.images = store.images.filter((r) => r.id !== imageId);
    },
  };
  return { store, backend };
}

function registryOf(backends: Record<string, Backend>, removeTimeoutMs?: number) {
  return new BackendRegistry(
    Object.entries(backends).map(([name, backend]) => ({ name, type: "test", backend, timeoutMs: 1000 })),
    { log: memoryLogger(), removeTimeoutMs },
  );
}

describe("RemoveImage in the registry", () => {
  const a = record({ id: id("a"), repoTags: ["app:1", "app:latest"] });
  const b = record({ id: id("b"), repoTags: ["tool:1"] });

  test("by any name: the image leaves the view with every name before remove() resolves", async () => {
    const { store, backend } = memoryStore([a, b]);
    const registry = registryOf({ rw: backend });
    await registry.loadAll();
    expect(registry.view.resolve("app:latest")?.pinned).toBe(false);
    expect(await registry.remove("app:latest")).toEqual({ id: id("a"), backends: ["rw"] });
    expect(store.removed).toEqual([id("a")]);
    expect(registry.view.resolve("app:1")).toBeUndefined();
    expect(registry.view.resolve(id("a"))).toBeUndefined();
    expect(registry.view.resolve("tool:1")?.id).toBe(id("b"));
    expect(await registry.remove("app:1")).toEqual({ backends: [] }); // absent: no error
  });

  test("a rescan that started before the removal does not bring the image back", async () => {
    const { store, backend } = memoryStore([a, b]);
    const registry = registryOf({ rw: backend });
    await registry.loadAll();
    const hold = store.holdNextList();
    const rescan = registry.loadAll(); // reads [a, b], then waits
    // The removal's own fresh list waits behind the held one.
    const removal = registry.remove("app:1");
    await new Promise((r) => setTimeout(r, 20));
    expect(registry.view.resolve("app:1")).toBeUndefined(); // gone at once
    // Every view published from now on is watched: none may hold the image again.
    let resurrected = false;
    registry.onViewChange((view) => (resurrected ||= view.resolve("app:1") !== undefined));
    hold.release(); // the stale rescan answers [a, b]
    await rescan;
    expect(resurrected).toBe(false); // ...and is not believed
    await removal;
    expect(registry.view.resolve("app:1")).toBeUndefined();
    expect(registry.view.size).toBe(1);
    // The image coming back to the store later (copied in again) is seen again.
    store.images = [a, b];
    await registry.loadAll();
    expect(registry.view.resolve("app:1")?.id).toBe(id("a"));
  });

  test("two removals at once run one after the other and lose nothing", async () => {
    let inRemove = 0;
    let overlapped = false;
    const { store, backend } = memoryStore([a, b, record({ id: id("c"), repoTags: ["c:1"] })]);
    const remove = backend.remove!.bind(backend);
    backend.remove = async (imageId, ctx) => {
      if (++inRemove > 1) overlapped = true;
      await new Promise((r) => setTimeout(r, 10));
      await remove(imageId, ctx);
      inRemove--;
    };
    const registry = registryOf({ rw: backend });
    await registry.loadAll();
    await Promise.all([registry.remove("app:1"), registry.remove("tool:1")]);
    expect(overlapped).toBe(false);
    expect(store.images.map((r) => r.id)).toEqual([id("c")]);
    expect(registry.view.images.map((i) => i.id)).toEqual([id("c")]);
  });

  test("an image held by a read-only backend is refused, naming it, and nothing is removed", async () => {
    const rw = memoryStore([a]);
    const ro = memoryStore([a], { writable: false });
    const registry = registryOf({ rw: rw.backend, ro: ro.backend });
    await registry.loadAll();
    expect(registry.view.resolve("app:1")?.pinned).toBe(true);
    const refusal = registry.remove("app:1");
    await expect(refusal).rejects.toBeInstanceOf(RemovalRefusedError);
    await expect(refusal).rejects.toThrow(/read-only backend "ro" \(test\)/);
    expect(rw.store.removed).toEqual([]);
  });

  test("a backend's refusal and failure reach the caller with its name; the queue goes on", async () => {
    const refuses = memoryStore([a]);
    refuses.backend.remove = () => {
      throw new RemovalRefused("tarball x.tar also holds other images");
    };
    const fails = memoryStore([b]);
    fails.backend.remove = () => {
      throw Object.assign(new Error("EROFS: read-only file system"), { path: "/store/index.json" });
    };
    const registry = registryOf({ refuses: refuses.backend, fails: fails.backend });
    await registry.loadAll();
    await expect(registry.remove("app:1")).rejects.toThrow(RemovalRefusedError);
    await expect(registry.remove("app:1")).rejects.toThrow(/backend "refuses" refused to remove .*x\.tar/);
    await expect(registry.remove("tool:1")).rejects.toThrow(RemovalFailedError);
    await expect(registry.remove("tool:1")).rejects.toThrow(/EROFS.*\/store\/index\.json/);
    expect(registry.view.size).toBe(2);
  });

  test("a backend whose remove() returns but still lists the image fails the call, naming it", async () => {
    const { store, backend } = memoryStore([a, b]);
    backend.remove = (imageId) => void store.removed.push(imageId); // says done, removes nothing
    const registry = registryOf({ rw: backend });
    await registry.loadAll();
    const removal = registry.remove("app:1");
    await expect(removal).rejects.toBeInstanceOf(RemovalFailedError);
    await expect(removal).rejects.toThrow(/backend "rw" still lists sha256:a+ after removing it/);
    expect(registry.view.resolve("app:1")?.id).toBe(id("a")); // the view says what the store holds
  });

  test("a backend without writable is never asked, even with a remove hook", async () => {
    const { store, backend } = memoryStore([a], { writable: false });
    const registry = registryOf({ ro: backend });
    await registry.loadAll();
    await expect(registry.remove(id("a"))).rejects.toThrow(RemovalRefusedError);
    expect(store.removed).toEqual([]);
  });

  test("a remove() that outlives its timeout fails the call; a removal asked before it ends fails at once, naming it; then removals go on", async () => {
    const { store, backend } = memoryStore([a, b]);
    let finish!: () => void;
    const events: string[] = [];
    const remove = backend.remove!.bind(backend);
    backend.remove = async (imageId, ctx) => {
      events.push(`start ${imageId}`);
      if (imageId === id("a")) await new Promise<void>((r) => (finish = r));
      await remove(imageId, ctx);
      events.push(`end ${imageId}`);
    };
    const registry = registryOf({ rw: backend }, 30);
    await registry.loadAll();
    await expect(registry.remove("app:1")).rejects.toThrow(/timed out after 30 ms/);
    // A hook that never ends must not hold every later RemoveImage open, nor
    // run it long after its caller (kubelet's GC) gave up on it.
    const started = performance.now();
    const next = registry.remove("tool:1");
    await expect(next).rejects.toBeInstanceOf(RemovalFailedError);
    await expect(next).rejects.toThrow(/earlier removal from backend "rw" .*still running/);
    expect(performance.now() - started).toBeLessThan(25);
    expect(events).toEqual([`start ${id("a")}`]);
    finish();
    await new Promise((r) => setTimeout(r, 20));
    expect(registry.view.resolve("app:1")).toBeUndefined(); // the late removal is seen
    await registry.remove("tool:1");
    expect(events).toEqual([`start ${id("a")}`, `end ${id("a")}`, `start ${id("b")}`, `end ${id("b")}`]);
    expect(store.images).toEqual([]);
    expect(registry.view.size).toBe(0);
  });
});
