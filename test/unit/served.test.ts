import { describe, expect, test } from "bun:test";
import type { Backend } from "../../src/backend/contract";
import { BackendRegistry } from "../../src/registry/registry";
import { ServedRegistry } from "../../src/registry/served";
import { id, memoryLogger, record } from "./helpers";

async function registryWith(backend: Backend) {
  const registry = new BackendRegistry([{ name: "b", type: "test", backend, timeoutMs: 1000 }], { log: memoryLogger() });
  await registry.loadAll();
  return registry;
}

describe("ServedRegistry", () => {
  test("a swap serves the new view at once and closes the old registry", async () => {
    let closed = 0;
    const old = await registryWith({ list: () => [record({ id: id("1"), repoTags: ["old:1"] })], close: () => void closed++ });
    const served = new ServedRegistry(old);
    expect(served.view.resolve("old:1")?.id).toBe(id("1"));
    const next = await registryWith({ list: () => [record({ id: id("2"), repoTags: ["new:1"] })] });
    await served.swap(next);
    expect(served.view.resolve("old:1")).toBeUndefined();
    expect(served.view.resolve("new:1")?.id).toBe(id("2"));
    expect(closed).toBe(1);
  });

  test("a call in flight on the old registry finishes there before it is closed", async () => {
    let closed = false;
    let finish: (r: ReturnType<typeof record>) => void = () => {};
    const old = await registryWith({
      list: () => [record({ id: id("1"), repoTags: ["old:1"] })],
      status: () => new Promise((r) => (finish = r)),
      close: () => void (closed = true),
    });
    const served = new ServedRegistry(old);
    const image = served.view.resolve("old:1")!;
    const detail = served.detail(image);
    await Bun.sleep(1);
    const swapped = served.swap(await registryWith({ list: () => [] }));
    await Bun.sleep(5);
    expect(closed).toBe(false);
    finish(record({ id: id("1"), config: { from: "old" } }));
    expect(await detail).toEqual({ from: "old" });
    await swapped;
    expect(closed).toBe(true);
  });

  test("health listeners follow the swap and hear about it", async () => {
    const served = new ServedRegistry(await registryWith({ list: () => [] }));
    let heard = 0;
    served.onHealthChange(() => heard++);
    const pending = new BackendRegistry([{ name: "p", type: "test", backend: { list: () => [] }, timeoutMs: 1000 }], { log: memoryLogger() });
    await served.swap(pending);
    expect(heard).toBe(1);
    expect(served.allLoadedOnce()).toBe(false);
    await pending.loadAll(); // pending → ok, reported through the new registry
    expect(heard).toBe(2);
    expect(served.allLoadedOnce()).toBe(true);
  });
});

describe("inherit (reload)", () => {
  const make = (backend: Backend, key: string) =>
    new BackendRegistry([{ name: "b", type: "test", backend, timeoutMs: 50, key }], { log: memoryLogger() });

  test("a backend configured the same way keeps its last good list when its first list after a reload fails", async () => {
    const before = make({ list: () => [record({ id: id("1"), repoTags: ["kept:1"] })] }, "same");
    await before.loadAll();
    const after = make({ list: () => new Promise(() => {}) }, "same");
    after.inherit(before);
    await after.loadAll();
    expect(after.view.resolve("kept:1")?.id).toBe(id("1"));
    expect(after.health()[0]).toMatchObject({ state: "failing", images: 1 });
    expect(after.allLoadedOnce()).toBe(true);
  });

  test("a backend configured differently starts empty", async () => {
    const before = make({ list: () => [record({ id: id("1"), repoTags: ["kept:1"] })] }, "old path");
    await before.loadAll();
    const after = make({ list: () => Promise.reject(new Error("no")) }, "new path");
    after.inherit(before);
    await after.loadAll();
    expect(after.view.size).toBe(0);
  });

  test("a lease keeps the old registry open across a swap until it is released (a blob still streaming)", async () => {
    let closed = false;
    const old = await registryWith({ list: () => [record({ id: id("1"), repoTags: ["old:1"] })], close: () => void (closed = true) });
    const served = new ServedRegistry(old);
    const lease = served.lease();
    const swapped = served.swap(await registryWith({ list: () => [] }));
    await Bun.sleep(5);
    expect(closed).toBe(false);
    expect(lease.registry.view.resolve("old:1")?.id).toBe(id("1"));
    lease.release();
    lease.release(); // twice is once
    await swapped;
    expect(closed).toBe(true);
  });

  test("view listeners hear each new view, the swapped-in registry's included, and follow it", async () => {
    let changes: () => void = () => {};
    const served = new ServedRegistry(await registryWith({ list: () => [] }));
    const heard: number[] = [];
    served.onViewChange((view) => heard.push(view.size));
    let images = [record({ id: id("2"), repoTags: ["new:1"] })];
    const next = new BackendRegistry([{ name: "n", type: "test", backend: { list: () => images, watch: (c) => ((changes = c), () => {}) }, timeoutMs: 1000 }], { log: memoryLogger(), debounceMs: 1 });
    await next.loadAll();
    await served.swap(next);
    expect(heard).toEqual([1]);
    next.startWatching();
    images = [...images, record({ id: id("3"), repoTags: ["new:2"] })];
    changes();
    await Bun.sleep(30);
    expect(heard).toEqual([1, 2]);
    await next.close();
  });
});
