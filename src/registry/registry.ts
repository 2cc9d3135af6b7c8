// BackendRegistry owns the configured backends and the merged view. It is the
// only caller of backend hooks, and it isolates them: a backend that throws,
// rejects, returns malformed records or outlives the per-call timeout keeps
// its last good snapshot in the view, and its failure is logged with its name
// and shown by `imagelet plugins`. Nothing a backend does can empty the view
// of the others.
import type { Backend, CallContext, FsUsage, ImageRecord, Logger } from "../backend/contract";
import type { Image } from "../model/image";
import { PinnedImages } from "../model/pinned";
import { quote } from "../model/reference";
import { errorText } from "../model/error-text";
import { groupByFilesystem, type FilesystemUsage } from "./filesystems";
import { validateRecords, type ValidRecord } from "./validate";
import { ImageView, type PinPolicy } from "./view";
import type { FrontRuntime } from "../runtime/preload";

export interface BackendHealth {
  name: string;
  type: string;
  /** "pending" before the first list() settles. */
  state: "pending" | "ok" | "failing";
  images: number;
  lastError?: string;
  lastErrorAt?: string;
  lastSuccessAt?: string;
  /** True while a call is outstanding past its timeout (the backend hangs). */
  hung: boolean;
  /** Set by a backend that can tell more about itself (e.g. a store mode it cannot read). */
  notice?: string;
  /** Whether the registry mirror can serve its images: it has the `content` hook (docs/mirror.md). */
  mirror: boolean;
  /** Of its images, how many the mirror serves: those with a `target` that are not embedded (0 without the hook). */
  mirrorImages: number;
}

export interface RegisteredBackend {
  name: string;
  type: string;
  backend: Backend;
  /** Per-call timeout in milliseconds. */
  timeoutMs: number;
  /** The backend's current notice (see BackendContext.setNotice). */
  notice?: () => string | undefined;
  /** Its type and options: the same key after a reload means the same store (see inherit). */
  key?: string;
  /**
   * Its filesystem comes first in ImageFsInfo (kubelet reads only the first):
   * front mode's runtime, where pulled copies land and the only place
   * kubelet's image GC can free.
   */
  primaryFilesystem?: boolean;
}

/** A store that keeps notifying is still listed at least this often: changes stay visible within a second. */
export const MAX_DEBOUNCE_WAIT_MS = 500;

class TimeoutError extends Error {
  constructor(ms: number) {
    super(`timed out after ${ms} ms`);
  }
}

/** RemoveImage cannot remove the image as asked; nothing was removed (FAILED_PRECONDITION). */
export class RemovalRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RemovalRefusedError";
  }
}

/** A writable backend failed while removing (the store may hold the image still; it reads correctly). */
export class RemovalFailedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RemovalFailedError";
  }
}

/** What RemoveImage did. */
export interface RemovalOutcome {
  /** The removed image's ID; undefined when the reference named no image (RemoveImage is idempotent). */
  id?: string;
  /** The backends it was removed from. */
  backends: string[];
}

/** Removing can rewrite index.json and delete many blobs: remove() gets at least this long. */
const REMOVE_MIN_TIMEOUT_MS = 60_000;

interface Slot {
  readonly reg: RegisteredBackend;
  snapshot: readonly ValidRecord[];
  /** The array list() returned last time: the same array back means nothing changed. */
  lastRaw?: readonly ImageRecord[];
  health: BackendHealth;
  inFlight: boolean;
  /** A refresh was asked for while one was running; run again when it ends. */
  again: boolean;
  stopWatch?: () => void;
  /** list() runs started so far (numbers them). */
  runs: number;
  /** Calls waiting for a list() run numbered at least `run` to end (see freshList). */
  waiters: { run: number; resolve: () => void }[];
  /**
   * Images removed from this backend, with the first list() run that started
   * after the removal: a run started before it may still return the image,
   * and must not bring it back into the view.
   */
  removed: Map<string, number>;
}

export interface RegistryOptions {
  log: Logger;
  /** Re-list every backend this often, in ms (0 = only on watch notifications). */
  pollIntervalMs?: number;
  /** Coalesces bursts of watch notifications, in ms. */
  debounceMs?: number;
  /** The longest a refresh is put off by notifications that keep coming (default MAX_DEBOUNCE_WAIT_MS). */
  maxDebounceWaitMs?: number;
  /** Re-measures the stores' disk usage (ImageFsInfo) this often, in ms. */
  fsIntervalMs?: number;
  /** pinned_images. */
  pinned?: PinnedImages;
  /** remove()'s timeout (default: the backend's, at least REMOVE_MIN_TIMEOUT_MS). */
  removeTimeoutMs?: number;
  /** The backend whose copy of an image is removable on its own (front mode's runtime; see PinPolicy.copies). */
  copies?: string;
}

/** How long after start-up the stores' disk usage is first measured, unless ImageFsInfo asks sooner. */
const FIRST_FS_INFO_DELAY_MS = 2000;

/** Walking a store can take longer than listing it: fsInfo() gets at least this long. */
const FS_INFO_MIN_TIMEOUT_MS = 60_000;

export class BackendRegistry {
  private readonly slots: Slot[];
  private currentView: ImageView = ImageView.empty;
  private readonly listeners = new Set<(view: ImageView) => void>();
  private readonly healthListeners = new Set<() => void>();
  private readonly reportedConflicts = new Set<string>();
  private pollTimer?: ReturnType<typeof setInterval>;
  private fsTimer?: ReturnType<typeof setInterval>;
  private filesystems?: FilesystemUsage[];
  private fsMeasuring?: Promise<void>;
  /** A refresh waiting for a backend's notifications to pause, and since when one has been waiting. */
  private readonly debounceTimers = new Map<Slot, { timer: ReturnType<typeof setTimeout>; since: number }>();
  /** Removals run one at a time (the tail of the queue). */
  private removals: Promise<unknown> = Promise.resolve();
  /** The backend of a remove() hook abandoned at its timeout and still running: removals are refused until it ends. */
  private abandonedRemoval?: string;
  /** A measurement started after the last removal; ImageFsInfo waits for it. */
  private fsAfterRemoval?: Promise<void>;
  private readonly pinPolicy: PinPolicy;
  /** Front mode: the runtime that must hold an image before it is reported (set by buildRegistry). */
  front?: FrontRuntime;

  /** RegistryReader.withFront: this registry stays open until it is closed, so nothing to hold. */
  withFront<T>(call: (front: FrontRuntime) => Promise<T>): Promise<T> {
    return call(this.front!);
  }

  constructor(
    backends: readonly RegisteredBackend[],
    private readonly options: RegistryOptions,
  ) {
    this.slots = backends.map((reg) => ({
      reg,
      snapshot: [],
      inFlight: false,
      again: false,
      runs: 0,
      waiters: [],
      removed: new Map(),
      health: { name: reg.name, type: reg.type, state: "pending", images: 0, hung: false, mirror: false, mirrorImages: 0 },
    }));
    this.pinPolicy = {
      patterns: options.pinned ?? PinnedImages.none,
      removers: new Set(this.slots.filter((s) => canRemove(s.reg.backend)).map((s) => s.reg.name)),
      copies: options.copies,
    };
  }

  /** The current merged view. */
  get view(): ImageView {
    return this.currentView;
  }

  health(): BackendHealth[] {
    return this.slots.map((s) => {
      const mirror = typeof s.reg.backend.content === "function";
      const mirrorImages = mirror ? s.snapshot.filter((r) => r.target !== undefined && r.kind !== "embedded").length : 0;
      return { ...s.health, notice: s.reg.notice?.(), mirror, mirrorImages };
    });
  }

  /** The backend configured under `name`. */
  registered(name: string): RegisteredBackend | undefined {
    return this.slotNamed(name)?.reg;
  }

  private slotNamed(name: string): Slot | undefined {
    return this.slots.find((s) => s.reg.name === name);
  }

  /**
   * Runs a hook the registry has no method of its own for (content.ts) on
   * backend `name`, under its per-call timeout, like every hook call.
   */
  callHook<T>(name: string, fn: (backend: Backend, ctx: CallContext) => T | Promise<T>): Promise<T> {
    const slot = this.slotNamed(name);
    if (!slot) return Promise.reject(new Error(`no backend ${quote(name)}`));
    return this.call(slot, (ctx) => fn(slot.reg.backend, ctx));
  }

  /**
   * Starts from the snapshots of the registry this one replaces (a reload): a
   * backend configured the same way keeps serving its last good list if its
   * first list here fails, as it would have without the reload.
   */
  inherit(previous: BackendRegistry): void {
    for (const slot of this.slots) {
      const before = previous.slots.find((s) => s.reg.name === slot.reg.name && s.reg.key !== undefined && s.reg.key === slot.reg.key);
      if (before?.health.lastSuccessAt === undefined) continue;
      slot.snapshot = before.snapshot;
      slot.health.images = before.snapshot.length;
      slot.health.lastSuccessAt = before.health.lastSuccessAt;
    }
    this.publish();
  }

  /** Resolves when a list() of backend `name` that started after now has ended (its changes are in the view). */
  async relist(name: string): Promise<void> {
    const slot = this.slotNamed(name);
    if (slot) await this.freshList(slot);
  }

  /** Lists every backend once (concurrently); resolves when all have settled or timed out. */
  async loadAll(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.refreshSlot(s)));
  }

  /** Starts watches and the poll interval; the view follows the stores from now on. */
  startWatching(): void {
    for (const slot of this.slots) {
      const watch = slot.reg.backend.watch;
      if (!watch) continue;
      try {
        slot.stopWatch = watch.call(slot.reg.backend, () => this.scheduleRefresh(slot));
      } catch (e) {
        this.fail(slot, `watch() failed: ${errorText(e)}`);
      }
    }
    const fsEvery = this.options.fsIntervalMs ?? 60_000;
    // The first measurement waits until the service has answered its first calls
    // (a walk of a large store competes with them); an ImageFsInfo call before
    // then measures at once.
    this.fsTimer = setTimeout(() => {
      void this.measureFilesystems();
      this.fsTimer = setInterval(() => void this.measureFilesystems(), fsEvery);
      this.fsTimer.unref?.();
    }, Math.min(FIRST_FS_INFO_DELAY_MS, fsEvery));
    this.fsTimer.unref?.();
    const every = this.options.pollIntervalMs ?? 0;
    if (every > 0) {
      this.pollTimer = setInterval(() => {
        for (const slot of this.slots) void this.refreshSlot(slot);
      }, every);
      this.pollTimer.unref?.();
    }
  }

  /**
   * Whether every backend has listed successfully at least once (gRPC health:
   * SERVING). Front mode's runtime does not count: its stores are served
   * whether it is up or not, and its own state is its row in `imagelet plugins`.
   */
  allLoadedOnce(): boolean {
    return this.slots.every((s) => s.reg.name === this.options.copies || s.health.lastSuccessAt !== undefined);
  }

  /** Called when a backend's state changes (pending → ok, ok ↔ failing). */
  onHealthChange(listener: () => void): () => void {
    this.healthListeners.add(listener);
    return () => this.healthListeners.delete(listener);
  }

  onViewChange(listener: (view: ImageView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Detail for one image (verbose ImageStatus): its OCI config (an artifact's
   * manifest), from the view, else from the backends' status().
   */
  async detail(image: Image): Promise<unknown> {
    const field = image.kind === "artifact" ? "manifest" : "config";
    if (image[field] !== undefined) return image[field];
    for (const name of image.backends) {
      const slot = this.slotNamed(name);
      const status = slot?.reg.backend.status;
      if (!slot || !status) continue;
      try {
        const record = await this.call(slot, (ctx) => status.call(slot.reg.backend, image.id, ctx));
        if (record?.[field] !== undefined) return record[field];
      } catch (e) {
        this.options.log.warn("backend status() failed", { backend: name, image: image.id, error: errorText(e) });
      }
    }
    return undefined;
  }

  /**
   * ImageFsInfo: the stores' disk usage per filesystem, primary first, as
   * last measured in the background (the first call waits for the first
   * measurement).
   */
  async imageFilesystems(): Promise<FilesystemUsage[]> {
    // After a removal the next answer shows the freed bytes (kubelet's GC reads it to see what it freed).
    if (this.fsAfterRemoval) await this.fsAfterRemoval;
    if (!this.filesystems) await this.measureFilesystems();
    return this.filesystems ?? [];
  }

  /** Asks every backend for its usage (one measurement at a time); a failing backend is logged and left out. */
  measureFilesystems(): Promise<void> {
    this.fsMeasuring ??= (async () => {
      const usages: FsUsage[] = [];
      const primaryFirst = [...this.slots].sort((a, b) => Number(b.reg.primaryFilesystem === true) - Number(a.reg.primaryFilesystem === true));
      for (const slot of primaryFirst) {
        const fsInfo = slot.reg.backend.fsInfo;
        if (!fsInfo) continue;
        try {
          const reported = await this.call(slot, (ctx) => fsInfo.call(slot.reg.backend, ctx), undefined, Math.max(slot.reg.timeoutMs, FS_INFO_MIN_TIMEOUT_MS));
          if (Array.isArray(reported)) usages.push(...reported.filter((u) => typeof u?.path === "string" && u.usedBytes >= 0 && u.inodesUsed >= 0));
        } catch (e) {
          this.options.log.warn("backend fsInfo() failed; its store is left out of ImageFsInfo", { backend: slot.reg.name, error: errorText(e) });
        }
      }
      this.filesystems = groupByFilesystem(usages, Date.now());
    })().finally(() => {
      this.fsMeasuring = undefined;
    });
    return this.fsMeasuring;
  }

  /**
   * RemoveImage: resolves `input` in the current view and removes that image,
   * with every name it has, from each backend holding it. Every holder must
   * be writable, or nothing is removed. Resolves once the view no longer
   * holds the image. Removals run one at a time.
   */
  remove(input: string): Promise<RemovalOutcome> {
    const run = this.removals.then(() => this.removeNow(input));
    this.removals = run.catch(() => undefined);
    return run;
  }

  private async removeNow(input: string): Promise<RemovalOutcome> {
    // Not held back until it ends: a hook that never ends would hold every later
    // RemoveImage open, and one that ends late would run removals long after
    // their callers (kubelet's GC) gave up on them and may use the image again.
    if (this.abandonedRemoval !== undefined) {
      throw new RemovalFailedError(
        `an earlier removal from backend ${quote(this.abandonedRemoval)} outlived its timeout and is still running; removed nothing, try again once it ends`,
      );
    }
    const image = this.currentView.resolve(input);
    if (!image) return { backends: [] };
    let holders = image.backends.map((name) => this.slotNamed(name)!);
    // Front mode: the runtime's copy goes (with any writable store's); a
    // read-only store keeps its preloaded image, which the runtime pulls
    // again from the mirror when a container needs it.
    if (this.pinPolicy.copies !== undefined && image.backends.includes(this.pinPolicy.copies)) {
      holders = holders.filter((s) => this.pinPolicy.removers.has(s.reg.name));
    }
    const readOnly = holders.filter((s) => !this.pinPolicy.removers.has(s.reg.name));
    if (readOnly.length > 0) {
      const names = readOnly.map((s) => `${quote(s.reg.name)} (${s.reg.type})`).join(", ");
      throw new RemovalRefusedError(
        `image ${quote(input)} (${image.id}) is held by read-only backend${readOnly.length > 1 ? "s" : ""} ${names}; ` +
          "imagelet removes images only from stores configured with writable = true, and removed nothing",
      );
    }
    // A backend that said it cannot remove this image goes first: it refuses
    // before any other backend has removed anything.
    const cannot = (s: Slot) => s.snapshot.some((r) => r.id === image.id && r.removable === false);
    holders.sort((a, b) => Number(cannot(b)) - Number(cannot(a)));
    const done: string[] = [];
    for (const slot of holders) {
      await this.removeFrom(slot, image.id, done);
      done.push(slot.reg.name);
    }
    this.fsAfterRemoval = (this.fsMeasuring ?? Promise.resolve()).then(() => this.measureFilesystems());
    const measured = this.fsAfterRemoval;
    void measured.finally(() => {
      if (this.fsAfterRemoval === measured) this.fsAfterRemoval = undefined;
    });
    this.options.log.info("image removed", { image: image.id, reference: input, backends: done.join(",") });
    return { id: image.id, backends: done };
  }

  private async removeFrom(slot: Slot, id: string, done: readonly string[]): Promise<void> {
    const remove = slot.reg.backend.remove!;
    const partly = done.length > 0 ? `; already removed from ${done.join(", ")}` : "";
    // A remove() abandoned at its timeout refuses later removals until it ends: removals never overlap.
    const lateEnd = () => {
      this.abandonedRemoval = undefined;
      // What it did is seen by a list that starts now.
      void this.refreshSlot(slot);
    };
    try {
      await this.call(slot, (ctx) => remove.call(slot.reg.backend, id, ctx), lateEnd, this.options.removeTimeoutMs ?? Math.max(slot.reg.timeoutMs, REMOVE_MIN_TIMEOUT_MS));
    } catch (e) {
      if (e instanceof TimeoutError) this.abandonedRemoval = slot.reg.name;
      if (e instanceof Error && e.name === "RemovalRefused") {
        throw new RemovalRefusedError(`backend ${quote(slot.reg.name)} refused to remove ${id}: ${e.message}${partly}`);
      }
      this.options.log.error("backend remove() failed", { backend: slot.reg.name, image: id, error: errorText(e) });
      throw new RemovalFailedError(`backend ${quote(slot.reg.name)} failed to remove ${id}: ${errorText(e)}${partly}`, { cause: e });
    }
    // Gone from the view at once; a list() already running may still return it, and is not believed.
    slot.removed.set(id, slot.runs + 1);
    slot.snapshot = slot.snapshot.filter((r) => r.id !== id);
    slot.lastRaw = undefined;
    this.publish();
    await this.freshList(slot);
    // remove() resolving is the backend's word; a list that began after it is
    // the proof. An image still listed (an entry the backend could not match
    // to the ID, a copy that came back) is not reported removed: kubelet's GC
    // would count bytes never freed.
    if (slot.snapshot.some((r) => r.id === id)) {
      this.options.log.error("backend remove() returned but the image is still listed", { backend: slot.reg.name, image: id });
      throw new RemovalFailedError(`backend ${quote(slot.reg.name)} still lists ${id} after removing it${partly}`);
    }
  }

  /** Resolves when a list() of this backend that started after now has ended. */
  private freshList(slot: Slot): Promise<void> {
    const run = slot.runs + 1;
    const ended = new Promise<void>((resolve) => slot.waiters.push({ run, resolve }));
    void this.refreshSlot(slot);
    return ended;
  }

  private endRun(slot: Slot, run: number): void {
    const ready = slot.waiters.filter((w) => w.run <= run);
    if (ready.length === 0) return;
    slot.waiters = slot.waiters.filter((w) => w.run > run);
    for (const w of ready) w.resolve();
  }

  async close(): Promise<void> {
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.fsTimer) clearInterval(this.fsTimer);
    for (const t of this.debounceTimers.values()) clearTimeout(t.timer);
    for (const slot of this.slots) {
      try {
        slot.stopWatch?.();
        await slot.reg.backend.close?.();
      } catch (e) {
        this.options.log.warn("backend close failed", { backend: slot.reg.name, error: errorText(e) });
      }
    }
  }

  /**
   * Notifications are debounced (a change is often several writes), but a
   * store written without a pause (a busy containerd's meta.db) must still be
   * read: a pending refresh is put off at most MAX_DEBOUNCE_WAIT_MS in all.
   */
  private scheduleRefresh(slot: Slot): void {
    const now = Date.now();
    const pending = this.debounceTimers.get(slot);
    if (pending) clearTimeout(pending.timer);
    const since = pending?.since ?? now;
    const wait = Math.max(0, Math.min(this.options.debounceMs ?? 50, since + (this.options.maxDebounceWaitMs ?? MAX_DEBOUNCE_WAIT_MS) - now));
    const timer = setTimeout(() => {
      this.debounceTimers.delete(slot);
      void this.refreshSlot(slot);
    }, wait);
    this.debounceTimers.set(slot, { timer, since });
  }

  /**
   * Runs one hook under the backend's timeout. A call that outlives it is
   * abandoned: the promise rejects with TimeoutError, the hook's AbortSignal
   * fires, its late result is ignored, and `onLateSettle` runs when it finally
   * ends (if ever).
   */
  private call<T>(slot: Slot, fn: (ctx: CallContext) => T | Promise<T>, onLateSettle?: () => void, timeoutMs?: number): Promise<T> {
    const controller = new AbortController();
    const ms = timeoutMs ?? slot.reg.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort(new TimeoutError(ms));
        reject(new TimeoutError(ms));
      }, ms);
      const settle = () => {
        clearTimeout(timer);
        if (timedOut) onLateSettle?.();
      };
      let result: T | Promise<T>;
      try {
        result = fn({ signal: controller.signal });
      } catch (e) {
        settle();
        reject(e);
        return;
      }
      Promise.resolve(result).then(
        (v) => {
          settle();
          if (!timedOut) resolve(v);
        },
        (e) => {
          settle();
          if (!timedOut) reject(e);
        },
      );
    });
  }

  /** An abandoned list() finally ended: the slot is free, and a refresh asked for meanwhile runs now. */
  private listSettledLate(slot: Slot): void {
    slot.health.hung = false;
    slot.inFlight = false;
    if (slot.again) {
      slot.again = false;
      void this.refreshSlot(slot);
    }
  }

  private async refreshSlot(slot: Slot): Promise<void> {
    if (slot.inFlight) {
      slot.again = true;
      return;
    }
    slot.inFlight = true;
    const run = ++slot.runs;
    let abandoned = false;
    try {
      const raw = await this.call(slot, (ctx) => slot.reg.backend.list(ctx), () => this.listSettledLate(slot));
      if (raw !== slot.lastRaw) {
        let records = validateRecords(raw);
        if (slot.removed.size > 0) records = this.withoutRemoved(slot, records, run);
        slot.lastRaw = raw;
        slot.snapshot = records;
        this.publish();
      }
      const wasFailing = slot.health.state === "failing";
      const changed = slot.health.state !== "ok";
      slot.health.state = "ok";
      slot.health.images = slot.snapshot.length;
      slot.health.lastSuccessAt = new Date().toISOString();
      if (wasFailing) this.options.log.info("backend recovered", { backend: slot.reg.name, images: slot.snapshot.length });
      if (changed) this.notifyHealth();
    } catch (e) {
      abandoned = e instanceof TimeoutError;
      if (abandoned) slot.health.hung = true;
      this.fail(slot, `list(): ${errorText(e)}`);
    } finally {
      // An abandoned call keeps the slot busy until it settles (listSettledLate).
      if (!abandoned) slot.inFlight = false;
      this.endRun(slot, run);
    }
    if (slot.again && !slot.inFlight) {
      slot.again = false;
      await this.refreshSlot(slot);
    }
  }

  /** A run that started before a removal ended may list the removed image: leave it out. */
  private withoutRemoved(slot: Slot, records: ValidRecord[], run: number): ValidRecord[] {
    for (const [id, firstFresh] of slot.removed) if (run >= firstFresh) slot.removed.delete(id);
    const stale = [...slot.removed.keys()];
    return stale.length === 0 ? records : records.filter((r) => !stale.includes(r.id));
  }

  private fail(slot: Slot, message: string): void {
    const repeated = slot.health.state === "failing" && slot.health.lastError === message;
    const changed = slot.health.state !== "failing";
    slot.health.state = "failing";
    slot.health.lastError = message;
    slot.health.lastErrorAt = new Date().toISOString();
    slot.health.images = slot.snapshot.length;
    if (changed) this.notifyHealth();
    // Log a failure once, not on every poll while it persists.
    if (!repeated) {
      this.options.log.error("backend failed; serving its last good snapshot", {
        backend: slot.reg.name,
        error: message,
        images: slot.snapshot.length,
      });
    }
  }

  private notifyHealth(): void {
    for (const l of this.healthListeners) l();
  }

  private publish(): void {
    const view = ImageView.merge(
      this.slots.map((s) => ({ backend: s.reg.name, records: s.snapshot })),
      (ref, keptId, keptBackend, droppedId, droppedBackend) => {
        const key = `${ref}\0${keptId}\0${droppedId}`;
        if (this.reportedConflicts.has(key)) return;
        this.reportedConflicts.add(key);
        this.options.log.warn("reference claimed by two images; the earlier backend wins", {
          reference: ref,
          kept: keptId,
          keptBackend,
          dropped: droppedId,
          droppedBackend,
        });
      },
      this.pinPolicy,
    );
    this.currentView = view;
    for (const l of this.listeners) l(view);
  }
}

/** Whether the registry may ask a backend to remove images: it says it is writable and has the hook. */
export function canRemove(backend: Backend): boolean {
  return backend.writable === true && typeof backend.remove === "function";
}
