import { describe, expect, test } from "bun:test";
import type { Backend, ImageRecord } from "../../src/backend/contract";
import { BackendRegistry } from "../../src/registry/registry";
import { id, memoryLogger, record } from "./helpers";

const healthy = (): Backend => ({ list: () => [record({ id: id("1"), repoTags: ["good:1"] })] });

/** A backend whose behaviour the test switches between calls. */
function scripted(initial: () => readonly ImageRecord[] | Promise<readonly ImageRecord[]>) {
  let behaviour = initial;
  let calls = 0;
  const backend: Backend = {
    list: () => {
      calls++;
      return behaviour();
    },
  };
  return { backend, set: (b: typeof behaviour) => void (behaviour = b), calls: () => calls };
}

function registryOf(backends: Record<string, Backend>, timeoutMs = 100) {
  const log = memoryLogger();
  const registry = new BackendRegistry(
    Object.entries(backends).map(([name, backend]) => ({ name, type: "test", backend, timeoutMs })),
    { log },
  );
  return { registry, log };
}

describe("isolation", () => {
  const faults: Record<string, () => never | Promise<never> | readonly ImageRecord[]> = {
    "throws synchronously": () => {
      throw new Error("boom");
    },
    rejects: () => Promise.reject(new Error("kaput")) as never,
    "throws a non-Error": () => {
      throw "a string";
    },
    "returns a non-array": () => ({ not: "a list" }) as never,
    "returns a record with a bad id": () => [record({ id: "sha256:xyz" })],
    "returns a record with size 0": () => [record({ id: id("2"), size: 0 })],
    "returns a record with an invalid tag": () => [record({ id: id("2"), repoTags: ["Not A Ref"] })],
  };
  for (const [name, fault] of Object.entries(faults)) {
    test(`a backend that ${name} fails alone, with its name logged`, async () => {
      const { registry, log } = registryOf({ good: healthy(), bad: { list: fault } });
      await registry.loadAll();
      expect(registry.view.resolve("good:1")?.id).toBe(id("1"));
      const bad = registry.health().find((h) => h.name === "bad")!;
      expect(bad.state).toBe("failing");
      expect(bad.lastError).toBeTruthy();
      expect(registry.health().find((h) => h.name === "good")!.state).toBe("ok");
      expect(log.lines.some((l) => l.level === "error" && l.fields?.backend === "bad")).toBe(true);
    });
  }

  test("a backend that never resolves times out; the others are served and it is marked hung", async () => {
    const start = Date.now();
    const { registry } = registryOf({ good: healthy(), hung: { list: () => new Promise<never>(() => {}) } }, 80);
    await registry.loadAll();
    expect(Date.now() - start).toBeLessThan(2000);
    expect(registry.view.size).toBe(1);
    const hung = registry.health().find((h) => h.name === "hung")!;
    expect(hung).toMatchObject({ state: "failing", hung: true });
    expect(hung.lastError).toContain("timed out after 80 ms");
  });

  test("the last good snapshot is served while a backend fails, and it recovers", async () => {
    const b = scripted(() => [record({ id: id("7"), repoTags: ["app:1"] })]);
    const { registry, log } = registryOf({ b: b.backend });
    await registry.loadAll();
    expect(registry.view.resolve("app:1")?.id).toBe(id("7"));

    b.set(() => {
      throw new Error("store vanished");
    });
    await registry.loadAll();
    await registry.loadAll();
    expect(registry.view.resolve("app:1")?.id).toBe(id("7"));
    expect(registry.health()[0]).toMatchObject({ state: "failing", images: 1 });
    // Logged once, not once per poll.
    expect(log.lines.filter((l) => l.level === "error").length).toBe(1);

    b.set(() => [record({ id: id("8"), repoTags: ["app:2"] })]);
    await registry.loadAll();
    expect(registry.view.resolve("app:1")).toBeUndefined();
    expect(registry.view.resolve("app:2")?.id).toBe(id("8"));
    expect(registry.health()[0]!.state).toBe("ok");
  });

  test("a hung backend is not called again until its call settles; then it catches up at once", async () => {
    let release: (v: readonly ImageRecord[]) => void = () => {};
    const b = scripted(() => new Promise((r) => (release = r)));
    const { registry } = registryOf({ b: b.backend }, 30);
    await registry.loadAll();
    await registry.loadAll();
    await registry.loadAll();
    expect(b.calls()).toBe(1);
    expect(registry.health()[0]!.hung).toBe(true);
    b.set(() => [record({ id: id("9") })]);
    release([]); // the late answer itself is ignored...
    await Bun.sleep(5);
    // ...and the refresh asked for during the hang has run.
    expect(b.calls()).toBe(2);
    expect(registry.health()[0]).toMatchObject({ hung: false, state: "ok" });
    expect(registry.view.size).toBe(1);
  });

  test("the same array back from list() does not rebuild the view", async () => {
    const list = [record({ id: id("1") })];
    const { registry } = registryOf({ b: { list: () => list } });
    await registry.loadAll();
    const first = registry.view;
    await registry.loadAll();
    expect(registry.view).toBe(first);
  });

  test("watch notifications re-list the backend", async () => {
    let notify = () => {};
    const b = scripted(() => []);
    const backend: Backend = { ...b.backend, watch: (onChange) => ((notify = onChange), () => {}) };
    const log = memoryLogger();
    const registry = new BackendRegistry([{ name: "w", type: "test", backend, timeoutMs: 100 }], { log, debounceMs: 5 });
    await registry.loadAll();
    registry.startWatching();
    b.set(() => [record({ id: id("5"), repoTags: ["new:1"] })]);
    notify();
    notify();
    await Bun.sleep(50);
    expect(registry.view.resolve("new:1")?.id).toBe(id("5"));
    expect(b.calls()).toBe(2); // two notifications within the debounce window: one re-list
    await registry.close();
  });

  test("notifications that never pause still re-list within the longest wait", async () => {
    let notify = () => {};
    const b = scripted(() => []);
    const backend: Backend = { ...b.backend, watch: (onChange) => ((notify = onChange), () => {}) };
    const registry = new BackendRegistry([{ name: "w", type: "test", backend, timeoutMs: 100 }], {
      log: memoryLogger(),
      debounceMs: 20,
      maxDebounceWaitMs: 60,
    });
    await registry.loadAll();
    registry.startWatching();
    b.set(() => [record({ id: id("6"), repoTags: ["busy:1"] })]);
    // A notification every 5 ms, each inside the 20 ms debounce: a pure debounce would never fire.
    const storm = setInterval(() => notify(), 5);
    await Bun.sleep(200);
    clearInterval(storm);
    expect(registry.view.resolve("busy:1")?.id).toBe(id("6"));
    await registry.close();
  });
});

describe("status() under the timeout", () => {
  test("a slow status() times out without freeing or marking the list slot", async () => {
    let releaseStatus: (v: ImageRecord | undefined) => void = () => {};
    const b = scripted(() => [record({ id: id("1"), repoTags: ["app:1"] })]);
    const backend: Backend = { ...b.backend, status: () => new Promise((r) => (releaseStatus = r)) };
    const { registry, log } = registryOf({ b: backend }, 30);
    await registry.loadAll();
    const image = registry.view.resolve("app:1")!;
    expect(await registry.detail(image)).toBeUndefined();
    expect(log.lines.some((l) => l.msg === "backend status() failed" && String(l.fields?.error).includes("timed out"))).toBe(true);
    expect(registry.health()[0]).toMatchObject({ state: "ok", hung: false });
    releaseStatus(undefined);
    await Bun.sleep(1);
    await registry.loadAll();
    expect(b.calls()).toBe(2);
  });
});

describe("health transitions", () => {
  test("allLoadedOnce follows first successes; listeners hear state changes only", async () => {
    const b = scripted(() => {
      throw new Error("not yet");
    });
    const { registry } = registryOf({ good: healthy(), b: b.backend });
    let changes = 0;
    registry.onHealthChange(() => changes++);
    await registry.loadAll();
    expect(registry.allLoadedOnce()).toBe(false);
    expect(changes).toBe(2); // good: pending → ok; b: pending → failing
    await registry.loadAll();
    expect(changes).toBe(2); // ok → ok and failing → failing are not changes
    b.set(() => []);
    await registry.loadAll();
    expect(changes).toBe(3); // b: failing → ok
    expect(registry.allLoadedOnce()).toBe(true);
  });
});
