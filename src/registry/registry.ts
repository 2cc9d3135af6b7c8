// BackendRegistry owns the configured backends and the merged view. It is the
// only caller of backend hooks, and it isolates them: a backend that throws,
// rejects, returns malformed records or outlives the per-call timeout keeps
// its last good snapshot in the view, and its failure is logged with its name
// and shown by `imagelet plugins`. Nothing a backend does can empty the view
// of the others.
import type { Backend, CallContext, FsUsage, ImageRecord, Logger } from "../backend/contract";
import type { Image } from "../model/image";
import { groupByFilesystem, type FilesystemUsage } from "./filesystems";
import { validateRecords, type ValidRecord } from "./validate";
import { ImageView } from "./view";

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
}

class TimeoutError extends Error {
  constructor(ms: number) {
    super(`timed out after ${ms} ms`);
  }
}

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
}

export interface RegistryOptions {
  log: Logger;
  /** Re-list every backend this often, in ms (0 = only on watch notifications). */
  pollIntervalMs?: number;
  /** Coalesces bursts of watch notifications, in ms. */
  debounceMs?: number;
  /** Re-measures the stores' disk usage (ImageFsInfo) this often, in ms. */
  fsIntervalMs?: number;
}

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
  private readonly debounceTimers = new Map<Slot, ReturnType<typeof setTimeout>>();

  constructor(
    backends: readonly RegisteredBackend[],
    private readonly options: RegistryOptions,
  ) {
    this.slots = backends.map((reg) => ({
      reg,
      snapshot: [],
      inFlight: false,
      again: false,
      health: { name: reg.name, type: reg.type, state: "pending", images: 0, hung: false },
    }));
  }

  /** The current merged view. */
  get view(): ImageView {
    return this.currentView;
  }

  health(): BackendHealth[] {
    return this.slots.map((s) => ({ ...s.health, notice: s.reg.notice?.() }));
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
    void this.measureFilesystems();
    this.fsTimer = setInterval(() => void this.measureFilesystems(), fsEvery);
    this.fsTimer.unref?.();
    const every = this.options.pollIntervalMs ?? 0;
    if (every > 0) {
      this.pollTimer = setInterval(() => {
        for (const slot of this.slots) void this.refreshSlot(slot);
      }, every);
      this.pollTimer.unref?.();
    }
  }

  /** Whether every backend has listed successfully at least once (gRPC health: SERVING). */
  allLoadedOnce(): boolean {
    return this.slots.every((s) => s.health.lastSuccessAt !== undefined);
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

  /** Detail for one image (verbose ImageStatus): the view's config, else the backends' status(). */
  async detail(image: Image): Promise<unknown> {
    if (image.config !== undefined) return image.config;
    for (const name of image.backends) {
      const slot = this.slots.find((s) => s.reg.name === name);
      const status = slot?.reg.backend.status;
      if (!slot || !status) continue;
      try {
        const record = await this.call(slot, (ctx) => status.call(slot.reg.backend, image.id, ctx));
        if (record?.config !== undefined) return record.config;
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
    if (!this.filesystems) await this.measureFilesystems();
    return this.filesystems ?? [];
  }

  /** Asks every backend for its usage (one measurement at a time); a failing backend is logged and left out. */
  measureFilesystems(): Promise<void> {
    this.fsMeasuring ??= (async () => {
      const usages: FsUsage[] = [];
      for (const slot of this.slots) {
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

  async close(): Promise<void> {
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.fsTimer) clearInterval(this.fsTimer);
    for (const t of this.debounceTimers.values()) clearTimeout(t);
    for (const slot of this.slots) {
      try {
        slot.stopWatch?.();
        await slot.reg.backend.close?.();
      } catch (e) {
        this.options.log.warn("backend close failed", { backend: slot.reg.name, error: errorText(e) });
      }
    }
  }

  private scheduleRefresh(slot: Slot): void {
    const existing = this.debounceTimers.get(slot);
    if (existing) clearTimeout(existing);
    this.debounceTimers.set(
      slot,
      setTimeout(() => {
        this.debounceTimers.delete(slot);
        void this.refreshSlot(slot);
      }, this.options.debounceMs ?? 50),
    );
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
    let abandoned = false;
    try {
      const raw = await this.call(slot, (ctx) => slot.reg.backend.list(ctx), () => this.listSettledLate(slot));
      if (raw !== slot.lastRaw) {
        const records = validateRecords(raw);
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
    }
    if (slot.again && !slot.inFlight) {
      slot.again = false;
      await this.refreshSlot(slot);
    }
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
    );
    this.currentView = view;
    for (const l of this.listeners) l(view);
  }
}

/** One line for a thrown value; a file path the error carries (fs errors, store problems) is kept. */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const path = (e as { path?: unknown }).path;
    return typeof path === "string" && !e.message.includes(path) ? `${e.message} (${path})` : e.message;
  }
  try {
    return `threw ${JSON.stringify(e)}`;
  } catch {
    return `threw ${String(e)}`;
  }
}
