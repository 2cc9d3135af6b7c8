// Front mode's pure logic: the [runtime] table, the runtime's records, the
// pin and removal policy for runtime copies, and the shared pull of a
// preloaded image (with a fake runtime client: no sockets).
import { describe, expect, test } from "bun:test";
import { Status } from "nice-grpc";
import type { Backend } from "../../src/backend/contract";
import { builtinBackends } from "../../src/backends/index";
import { ConfigError, validateConfig } from "../../src/config/config";
import { configToml } from "../../src/config/dump";
import type { Image } from "../../src/model/image";
import { DEFAULT_PLUGIN_DIR } from "../../src/plugins/load";
import { BackendRegistry } from "../../src/registry/registry";
import { ImageView } from "../../src/registry/view";
import { RUNTIME_BACKEND, runtimeRecord } from "../../src/runtime/backend";
import { RuntimeCallError, RuntimeUnavailableError, type RuntimeClient } from "../../src/runtime/client";
import { MirrorRequestCounter } from "../../src/runtime/mirror-witness";
import { FrontRuntime, PreloadPullError, mirrorConfigKind, pullReference } from "../../src/runtime/preload";
import { hex, id, memoryLogger, record, valid } from "./helpers";

const definitions = builtinBackends({ pluginDir: DEFAULT_PLUGIN_DIR, allowInsecure: false });
const parse = (raw: Record<string, unknown>) => validateConfig(raw, "/etc/imagelet/config.toml", definitions);

describe("[runtime]", () => {
  test("endpoint, with timeout and mirror_wait defaulted or read", () => {
    expect(parse({ runtime: { endpoint: "unix:///run/containerd/containerd.sock" } }).runtime).toEqual({
      endpoint: "unix:///run/containerd/containerd.sock",
      timeoutMs: 10_000,
      mirrorWaitMs: 5_000,
    });
    expect(parse({ runtime: { endpoint: "/run/crio/crio.sock", timeout: "2s", mirror_wait: "500ms" } }).runtime).toEqual({
      endpoint: "/run/crio/crio.sock",
      timeoutMs: 2000,
      mirrorWaitMs: 500,
    });
    expect(parse({}).runtime).toBeUndefined();
  });

  const errors: [string, unknown, RegExp][] = [
    ["no endpoint", {}, /runtime\.endpoint: missing/],
    ["a TCP endpoint", { endpoint: "tcp://127.0.0.1:1" }, /runtime\.endpoint: endpoint "tcp:\/\/127\.0\.0\.1:1" is not a unix socket path/],
    ["an unknown key", { endpoint: "/x.sock", endpiont: "/y.sock" }, /runtime\.endpiont: unknown key/],
    ["a bad duration", { endpoint: "/x.sock", timeout: 3 }, /runtime\.timeout: expected a duration/],
    ["not a table", "unix:///x.sock", /: runtime: expected a \[runtime\] table/],
  ];
  for (const [what, table, message] of errors) {
    test(`${what} is a ConfigError naming the key`, () => {
      expect(() => parse({ runtime: table })).toThrow(ConfigError);
      expect(() => parse({ runtime: table })).toThrow(message);
    });
  }

  test("imagelet config prints it, and what it prints reads back the same", () => {
    const config = parse({ runtime: { endpoint: "unix:///run/containerd/containerd.sock", mirror_wait: "2s" } });
    const text = configToml(config, definitions);
    expect(text).toContain('[runtime]\nendpoint = "unix:///run/containerd/containerd.sock"\ntimeout = "10s"\nmirror_wait = "2s"\n');
    expect(parse(Bun.TOML.parse(text) as Record<string, unknown>).runtime).toEqual(config.runtime);
    expect(configToml(parse({}), definitions)).toContain("# No [runtime]: front mode is off");
  });
});

describe("the runtime's records", () => {
  test("a CRI image becomes a record; CRI-O's bare-hex ID gets its sha256: prefix", () => {
    expect(runtimeRecord({ id: id("a"), repoTags: ["docker.io/library/x:1"], repoDigests: [], size: 42, uid: { value: 0 }, pinned: true })).toEqual({
      id: id("a"), repoTags: ["docker.io/library/x:1"], repoDigests: [], size: 42, user: "0", kind: "oci", pinned: true, source: "runtime",
    });
    expect(runtimeRecord({ id: hex("b"), size: 1, username: "nobody" })).toMatchObject({ id: id("b"), user: "nobody" });
  });
});

describe("pinning in front mode", () => {
  const removers = new Set([RUNTIME_BACKEND]);
  const merge = (snapshots: Record<string, ReturnType<typeof valid>[]>) =>
    ImageView.merge(Object.entries(snapshots).map(([backend, records]) => ({ backend, records })), undefined, { patterns: { empty: true } as never, removers, copies: RUNTIME_BACKEND });

  test("preloaded only: pinned (nothing to remove); with a runtime copy: removable; runtime only: removable unless the runtime pins it", () => {
    const view = merge({
      store: [valid({ id: id("1"), repoTags: ["a:1"] }), valid({ id: id("2"), repoTags: ["b:1"] })],
      [RUNTIME_BACKEND]: [valid({ id: id("2"), repoTags: ["b:1", "b:alias"] }), valid({ id: id("3") }), valid({ id: id("4"), pinned: true })],
    });
    expect(view.getById(id("1"))!.pinned).toBe(true);
    const both = view.getById(id("2"))!;
    expect(both.pinned).toBe(false);
    // One entry, names merged.
    expect(both.repoTags).toEqual(["docker.io/library/b:1", "docker.io/library/b:alias"]);
    expect(both.backends).toEqual(["store", RUNTIME_BACKEND]);
    expect(view.getById(id("3"))!.pinned).toBe(false);
    expect(view.getById(id("4"))!.pinned).toBe(true);
  });

  test("RemoveImage takes the runtime's copy only; the preloaded image stays, pinned again", async () => {
    let runtimeHas = [record({ id: id("2"), repoTags: ["b:1"] })];
    const removed: string[] = [];
    const runtime: Backend = {
      writable: true,
      list: () => runtimeHas,
      remove: (x) => {
        removed.push(x);
        runtimeHas = runtimeHas.filter((r) => r.id !== x);
      },
    };
    const store: Backend = { list: () => [record({ id: id("2"), repoTags: ["b:1"] })] };
    const registry = new BackendRegistry(
      [
        { name: "store", type: "oci-layout", backend: store, timeoutMs: 1000 },
        { name: RUNTIME_BACKEND, type: RUNTIME_BACKEND, backend: runtime, timeoutMs: 1000 },
      ],
      { log: memoryLogger(), copies: RUNTIME_BACKEND },
    );
    await registry.loadAll();
    expect(registry.view.resolve("b:1")!.pinned).toBe(false);
    const outcome = await registry.remove("b:1");
    expect(outcome).toEqual({ id: id("2"), backends: [RUNTIME_BACKEND] });
    expect(removed).toEqual([id("2")]);
    const after = registry.view.resolve("b:1")!;
    expect(after.backends).toEqual(["store"]);
    expect(after.pinned).toBe(true);
    // Again: a read-only store holds it alone, so it is refused (kubelet's GC never picks a pinned image).
    await expect(registry.remove("b:1")).rejects.toThrow(/read-only backend "store"/);
    await registry.close();
  });
});

/** A fake runtime: holds a set of IDs; pulls take `pullMs` and give `pulled(ref)`. */
function fakeRuntime(opts: { pulled?: (ref: string) => string; pullMs?: number; fail?: Error } = {}) {
  const held = new Set<string>();
  const pulls: string[] = [];
  const client = {
    endpoint: "unix:///run/containerd/containerd.sock",
    async imageStatus(ref: string) {
      return held.has(ref) ? { id: ref } : undefined;
    },
    async pullImage(request: { image?: { image?: string } }, signal: AbortSignal) {
      const ref = request.image!.image!;
      pulls.push(ref);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, opts.pullMs ?? 10);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(new RuntimeCallError("unix:///run/containerd/containerd.sock", Status.CANCELLED, "PullImage", "context canceled"));
        });
      });
      if (opts.fail) throw opts.fail;
      const got = opts.pulled?.(ref) ?? id("1");
      held.add(got);
      return got;
    },
  };
  return { client: client as unknown as RuntimeClient, held, pulls };
}

const preloaded: Image = ImageView.merge([{ backend: "store", records: [valid({ id: id("1"), repoTags: ["bb:1.0"], repoDigests: [`bb@sha256:${hex("d")}`] })] }]).getById(id("1"))!;

function front(client: RuntimeClient, witness?: MirrorRequestCounter, mirrorWaitMs = 50) {
  const log = memoryLogger();
  let relists = 0;
  const f = new FrontRuntime(client, { log, mirrorWaitMs, witness, relist: async () => void relists++ });
  return { f, log, relists: () => relists };
}

const never = () => new AbortController().signal;

describe("preloaded images reach the runtime", () => {
  test("the name pulled: the one asked for when it names the image, else its first tag, else its first digest", () => {
    expect(pullReference(preloaded, "bb:1.0")).toBe("docker.io/library/bb:1.0");
    expect(pullReference(preloaded, `bb@sha256:${hex("d")}`)).toBe(`docker.io/library/bb@sha256:${hex("d")}`);
    expect(pullReference(preloaded, hex("1").slice(0, 12))).toBe("docker.io/library/bb:1.0");
    expect(mirrorConfigKind("unix:///run/k3s/containerd/containerd.sock")).toBe("k3s");
    expect(mirrorConfigKind("unix:///var/run/crio/crio.sock")).toBe("crio");
    expect(mirrorConfigKind("unix:///run/containerd/containerd.sock")).toBe("containerd");
  });

  test("concurrent callers share one pull; the runtime holding it answers at once afterwards", async () => {
    const rt = fakeRuntime({ pullMs: 30 });
    const { f, relists } = front(rt.client);
    await Promise.all(Array.from({ length: 8 }, () => f.ensure(preloaded, "bb:1.0", never())));
    expect(rt.pulls).toEqual(["docker.io/library/bb:1.0"]);
    expect(relists()).toBe(1);
    await f.ensure(preloaded, "bb:1.0", never());
    expect(rt.pulls.length).toBe(1);
  });

  test("a caller that found the image missing just before another caller's pull ended does not pull again", async () => {
    const rt = fakeRuntime();
    let asked = 0;
    (rt.client as unknown as { imageStatus: (ref: string) => Promise<unknown> }).imageStatus = async (ref: string) => {
      // The first answer is from before the other pull ended; by the second, the runtime holds it.
      if (asked++ === 0) return undefined;
      return { id: ref };
    };
    const { f } = front(rt.client);
    await f.ensure(preloaded, "bb:1.0", never());
    expect(rt.pulls).toEqual([]);
    expect(asked).toBe(2);
  });

  test("a failing pull reaches every caller, is logged once, and the next call tries again", async () => {
    const rt = fakeRuntime({ fail: new RuntimeCallError("unix:///run/containerd/containerd.sock", Status.NOT_FOUND, "PullImage", "not found") });
    const { f, log } = front(rt.client);
    const results = await Promise.allSettled([f.ensure(preloaded, "bb:1.0", never()), f.ensure(preloaded, "bb:1.0", never())]);
    for (const r of results) {
      expect(r.status).toBe("rejected");
      const e = (r as PromiseRejectedResult).reason as PreloadPullError;
      expect(e).toBeInstanceOf(PreloadPullError);
      expect(e.code).toBe(Status.NOT_FOUND);
      expect(e.message).toContain('preloaded image "docker.io/library/bb:1.0"');
      expect(e.message).toContain("imagelet mirror-config containerd");
    }
    await expect(f.ensure(preloaded, "bb:1.0", never())).rejects.toThrow(PreloadPullError);
    expect(rt.pulls.length).toBe(2);
    expect(log.lines.filter((l) => l.level === "error").length).toBe(1);
  });

  test("a pull the mirror never sees is ended after mirror_wait, with one log line giving the fix", async () => {
    const rt = fakeRuntime({ pullMs: 10_000 });
    const { f, log } = front(rt.client, new MirrorRequestCounter(), 50);
    const t = performance.now();
    const e = await f.ensure(preloaded, "bb:1.0", never()).catch((x) => x);
    expect(performance.now() - t).toBeLessThan(2000);
    expect(e).toBeInstanceOf(PreloadPullError);
    expect(e.code).toBe(Status.FAILED_PRECONDITION);
    expect(e.message).toContain("never reached imagelet's mirror within 50 ms");
    expect(e.message).toContain("run `imagelet mirror-config containerd`");
    await f.ensure(preloaded, "bb:1.0", never()).catch(() => {});
    expect(log.lines.filter((l) => l.level === "error").map((l) => l.msg)).toEqual([e.message]);
  });

  test("a pull the mirror sees runs past mirror_wait", async () => {
    const witness = new MirrorRequestCounter();
    const rt = fakeRuntime({ pullMs: 150 });
    const { f } = front(rt.client, witness, 50);
    const pending = f.ensure(preloaded, "bb:1.0", never());
    setTimeout(() => witness.saw("docker.io/library/bb"), 10);
    await pending;
    expect(rt.held.has(id("1"))).toBe(true);
  });

  test("the runtime pulling another image under that name is an error naming both IDs", async () => {
    const rt = fakeRuntime({ pulled: () => id("9") });
    const { f } = front(rt.client);
    const e = await f.ensure(preloaded, "bb:1.0", never()).catch((x) => x);
    expect(e).toBeInstanceOf(PreloadPullError);
    expect(e.message).toContain(`got image ${id("9")}, not the preloaded ${id("1")}`);
  });

  test("the pull ends when the last caller gives up, not before", async () => {
    const rt = fakeRuntime({ pullMs: 10_000 });
    const { f } = front(rt.client);
    const a = new AbortController();
    const b = new AbortController();
    const first = f.ensure(preloaded, "bb:1.0", a.signal).catch((e) => e);
    const second = f.ensure(preloaded, "bb:1.0", b.signal).catch((e) => e);
    await Bun.sleep(5);
    a.abort(new Error("first gave up"));
    expect((await first).message).toBe("first gave up");
    expect(rt.pulls.length).toBe(1);
    b.abort(new Error("second gave up"));
    expect((await second).message).toBe("second gave up");
    // A new caller starts a new pull (the old one was ended).
    await Bun.sleep(5);
    const third = f.ensure(preloaded, "bb:1.0", AbortSignal.timeout(20)).catch((e) => e);
    await third;
    expect(rt.pulls.length).toBe(2);
  });

  test("the runtime down is RuntimeUnavailableError, untouched", async () => {
    const client = {
      endpoint: "unix:///x.sock",
      imageStatus: async () => {
        throw new RuntimeUnavailableError("unix:///x.sock", "connect ECONNREFUSED");
      },
    } as unknown as RuntimeClient;
    const { f } = front(client);
    await expect(f.ensure(preloaded, "bb:1.0", never())).rejects.toThrow(/container runtime unix:\/\/\/x.sock is unavailable/);
  });
});

describe("health in front mode", () => {
  test("the runtime down does not keep the service NOT_SERVING: its stores are served", async () => {
    const registry = new BackendRegistry(
      [
        { name: "store", type: "oci-layout", backend: { list: () => [record({ id: id("1") })] }, timeoutMs: 1000 },
        {
          name: RUNTIME_BACKEND,
          type: RUNTIME_BACKEND,
          backend: {
            list: () => {
              throw new RuntimeUnavailableError("unix:///x.sock", "connect ENOENT");
            },
          },
          timeoutMs: 1000,
        },
      ],
      { log: memoryLogger(), copies: RUNTIME_BACKEND },
    );
    await registry.loadAll();
    expect(registry.allLoadedOnce()).toBe(true);
    expect(registry.health().find((h) => h.name === RUNTIME_BACKEND)!.state).toBe("failing");
    expect(registry.view.getById(id("1"))).toBeDefined();
    await registry.close();
  });
});
