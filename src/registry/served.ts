// The registry the RPC handlers read, replaceable whole. A reload builds a new
// BackendRegistry beside the running one and swaps it in with one assignment:
// a call reads either the old view or the new one, never a half-built one, and
// a call still running on the old registry (a verbose ImageStatus waiting on a
// status() hook, a blob the registry mirror is still sending) finishes there
// before the old registry is closed.
import type { Image } from "../model/image";
import type { FilesystemUsage } from "./filesystems";
import type { BackendHealth, BackendRegistry, RemovalOutcome } from "./registry";
import type { ImageView } from "./view";

/** What the RPC handlers need from a registry. */
export interface RegistryReader {
  readonly view: ImageView;
  detail(image: Image): Promise<unknown>;
  imageFilesystems(): Promise<FilesystemUsage[]>;
  /** RemoveImage (BackendRegistry.remove). */
  remove(input: string): Promise<RemovalOutcome>;
  allLoadedOnce(): boolean;
  onHealthChange(listener: () => void): () => void;
}

/**
 * A registry held open for work that outlives a call's promise (a response
 * body still streaming): the registry it started on is not closed by a
 * reload until `release()`, which may be called more than once.
 */
export interface Lease {
  readonly registry: BackendRegistry;
  release(): void;
}

interface Generation {
  registry: BackendRegistry;
  /** Calls running on this registry. */
  calls: number;
  /** Replaced: close it when its last call ends. */
  retired?: () => void;
}

export class ServedRegistry implements RegistryReader {
  private current: Generation;
  private readonly healthListeners = new Set<() => void>();
  private readonly viewListeners = new Set<(view: ImageView) => void>();
  private unsubscribe: () => void;

  constructor(registry: BackendRegistry) {
    this.current = { registry, calls: 0 };
    this.unsubscribe = this.subscribe(registry);
  }

  get registry(): BackendRegistry {
    return this.current.registry;
  }

  get view(): ImageView {
    return this.current.registry.view;
  }

  health(): BackendHealth[] {
    return this.current.registry.health();
  }

  allLoadedOnce(): boolean {
    return this.current.registry.allLoadedOnce();
  }

  onHealthChange(listener: () => void): () => void {
    this.healthListeners.add(listener);
    return () => this.healthListeners.delete(listener);
  }

  /**
   * Called with each new view: a backend's store changed, or a reload
   * swapped the registry (the subscription follows it).
   */
  onViewChange(listener: (view: ImageView) => void): () => void {
    this.viewListeners.add(listener);
    return () => this.viewListeners.delete(listener);
  }

  /** Holds the current registry open until the lease is released (see Lease). */
  lease(): Lease {
    const generation = this.current;
    generation.calls++;
    let held = true;
    return {
      registry: generation.registry,
      release: () => {
        if (!held) return;
        held = false;
        generation.calls--;
        if (generation.calls === 0) generation.retired?.();
      },
    };
  }

  detail(image: Image): Promise<unknown> {
    return this.within((r) => r.detail(image));
  }

  imageFilesystems(): Promise<FilesystemUsage[]> {
    return this.within((r) => r.imageFilesystems());
  }

  remove(input: string): Promise<RemovalOutcome> {
    return this.within((r) => r.remove(input));
  }

  /**
   * Serves `next` from now on. Resolves when the replaced registry is closed,
   * after the calls still running on it have ended.
   */
  swap(next: BackendRegistry): Promise<void> {
    const old = this.current;
    this.unsubscribe();
    this.current = { registry: next, calls: 0 };
    this.unsubscribe = this.subscribe(next);
    this.notifyHealth();
    this.notifyView(next.view);
    return new Promise((resolve) => {
      old.retired = () => void old.registry.close().then(resolve, resolve);
      if (old.calls === 0) old.retired();
    });
  }

  close(): Promise<void> {
    this.unsubscribe();
    return this.current.registry.close();
  }

  /** Runs a call on the current registry, holding that registry open until the call ends. */
  private async within<T>(call: (registry: BackendRegistry) => Promise<T>): Promise<T> {
    const lease = this.lease();
    try {
      return await call(lease.registry);
    } finally {
      lease.release();
    }
  }

  private subscribe(registry: BackendRegistry): () => void {
    const health = registry.onHealthChange(() => this.notifyHealth());
    const view = registry.onViewChange((v) => this.notifyView(v));
    return () => {
      health();
      view();
    };
  }

  private notifyView(view: ImageView): void {
    for (const listener of this.viewListeners) listener(view);
  }

  private notifyHealth(): void {
    for (const listener of this.healthListeners) listener();
  }
}
