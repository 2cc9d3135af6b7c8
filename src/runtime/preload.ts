// Front mode's promise to kubelet: an image the stores hold is answered
// "present" (ImageStatus) or "pulled" (PullImage) only once the runtime holds
// it, so the ID kubelet hands to CreateContainer is one the runtime can start.
// The runtime gets it the ordinary way, a CRI PullImage of one of its names,
// which its registry configuration sends to imagelet's mirror: it reads the
// store from local disk and takes seconds.
//
// - Concurrent callers for one image share one pull; it runs while at least
//   one of them still waits, and each gets its outcome.
// - A pull that fails says why, with the runtime's words and the image.
// - A pull that never reaches the mirror (the runtime has no mirror
//   configuration) is ended after `mirrorWaitMs`, with one log line giving
//   the fix, instead of hanging until kubelet's deadline.
import { Status } from "nice-grpc";
import type { Logger } from "../backend/contract";
import type { Image } from "../model/image";
import { parseNormalizedNamed, quote, taggedReference } from "../model/reference";
import { RUNTIME_BACKEND, viewId } from "./backend";
import type { RuntimeClient } from "./client";
import { PreloadPullError, RuntimeCallError, RuntimeUnavailableError } from "./errors";

export { PreloadPullError };
import type { MirrorWitness } from "./mirror-witness";

export interface FrontOptions {
  log: Logger;
  /** The longest a pull may run with no request for its repository reaching the mirror. */
  mirrorWaitMs: number;
  /** The mirror's request counts; without it (no `[mirror]` in this process) the wait is not watched. */
  witness?: MirrorWitness;
  /** Re-lists the runtime's images into the view (after a pull). */
  relist(): Promise<void>;
  /** The runtime's own ID for a view ID, as last listed (CRI-O's are bare hex and it does not strip `sha256:`). */
  runtimeId?(id: string): string;
}

/** The `imagelet mirror-config` argument for a runtime, guessed from its socket path. */
export function mirrorConfigKind(endpoint: string): string {
  if (endpoint.includes("k3s")) return "k3s";
  if (endpoint.includes("crio")) return "crio";
  if (endpoint.includes("docker")) return "docker";
  return "containerd";
}

/**
 * The name the runtime pulls `image` by: the one the caller asked for when it
 * is one of the image's names, else its first tag, else its first digest.
 */
export function pullReference(image: Image, requested: string): string | undefined {
  try {
    const ref = parseNormalizedNamed(requested);
    const digested = ref.digest !== undefined ? `${ref.repository}@${ref.digest}` : undefined;
    const tagged = taggedReference(ref);
    if (digested !== undefined && image.repoDigests.includes(digested)) return digested;
    if (digested === undefined && image.repoTags.includes(tagged)) return tagged;
  } catch {
    // an ID or ID prefix: use the image's own names
  }
  return image.repoTags[0] ?? image.repoDigests[0];
}

/** A shared pull and the number of callers still waiting for it. */
interface Pull {
  done: Promise<void>;
  waiting: number;
  controller: AbortController;
}

export class FrontRuntime {
  private readonly pulls = new Map<string, Pull>();
  /** Images whose missing mirror configuration was logged already: one line, not one per kubelet retry. */
  private readonly reported = new Set<string>();

  constructor(
    readonly client: RuntimeClient,
    private readonly options: FrontOptions,
  ) {}

  /** The mirror's request counts this front mode watches (kept across a reload). */
  get witness(): MirrorWitness | undefined {
    return this.options.witness;
  }

  /**
   * Whether the runtime must be given this image before it is reported: a
   * store holds it. Artifacts too (image volumes are the runtime's to mount);
   * iSulad's embedded images are never served.
   */
  preloaded(image: Image): boolean {
    return image.kind !== "embedded" && image.backends.some((b) => b !== RUNTIME_BACKEND);
  }

  /** Whether the runtime holds `image` now (asked, not taken from the last listing: it may have been removed behind imagelet). */
  async holds(image: Image, signal?: AbortSignal): Promise<boolean> {
    const held = await this.client.imageStatus(this.options.runtimeId?.(image.id) ?? image.id, signal);
    return held?.id !== undefined && held.id !== null && viewId(held.id) === image.id;
  }

  /**
   * Resolves once the runtime holds `image`, pulling it through the mirror
   * if needed. Throws RuntimeUnavailableError when the runtime is down,
   * PreloadPullError when the pull fails; `signal` ends this caller's wait.
   */
  async ensure(image: Image, requested: string, signal: AbortSignal): Promise<void> {
    if (await this.holds(image, signal)) return;
    let pull = this.pulls.get(image.id);
    if (!pull) {
      const controller = new AbortController();
      const created: Pull = { waiting: 0, controller, done: Promise.resolve() };
      created.done = this.pull(image, requested, controller.signal).finally(() => this.pulls.delete(image.id));
      // Every caller may have given up before it ends: its failure is then nobody's to report.
      created.done.catch(() => {});
      pull = created;
      this.pulls.set(image.id, pull);
    }
    const shared = pull;
    shared.waiting++;
    try {
      await abortable(shared.done, signal);
    } finally {
      // The last caller to give up ends the pull: nobody is left to use it.
      if (--shared.waiting === 0 && signal.aborted) shared.controller.abort(signal.reason);
    }
  }

  /** PullImage of an image in no store: the runtime's ordinary pull. Returns its image_ref. */
  async forward(request: Parameters<RuntimeClient["pullImage"]>[0], signal: AbortSignal): Promise<string> {
    const ref = await this.client.pullImage(request, signal);
    await this.options.relist();
    return ref;
  }

  private async pull(image: Image, requested: string, signal: AbortSignal): Promise<void> {
    const { log, witness, mirrorWaitMs } = this.options;
    const ref = pullReference(image, requested);
    if (ref === undefined) {
      throw new PreloadPullError(`preloaded image ${image.id} has no name the runtime could pull it by (no tag, no digest reference)`, Status.FAILED_PRECONDITION);
    }
    // A caller that found it missing just before another pull ended: nothing to do.
    if (await this.holds(image, signal)) return;
    const repository = parseNormalizedNamed(ref).repository;
    const before = witness?.requests(repository);
    const reached = () => witness === undefined || witness.requests(repository) !== before;
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    let notReached = false;
    const watch =
      witness === undefined
        ? undefined
        : setTimeout(() => {
            if (reached()) return;
            notReached = true;
            controller.abort(new Error("mirror not reached"));
          }, mirrorWaitMs);
    const started = performance.now();
    let got: string;
    try {
      got = await this.client.pullImage({ image: { image: ref } }, controller.signal);
    } catch (e) {
      if (e instanceof RuntimeUnavailableError) throw e;
      if (notReached || (witness !== undefined && !reached())) throw this.mirrorNotReached(image, ref, e);
      const why = e instanceof RuntimeCallError ? e.message : e instanceof Error ? e.message : String(e);
      // Without the mirror's request counts, whether the pull reached it is unknown: the fix is said as a condition.
      const hint = witness === undefined ? `; if the runtime's registry configuration does not name imagelet's mirror, run \`imagelet mirror-config ${mirrorConfigKind(this.client.endpoint)}\` (docs/runtimes.md)` : "";
      const message = `the runtime could not pull preloaded image ${quote(ref)} (${image.id}) from imagelet's mirror: ${why}${hint}`;
      this.reportOnce(image.id, message);
      throw new PreloadPullError(message, e instanceof RuntimeCallError ? e.code : Status.UNAVAILABLE);
    } finally {
      clearTimeout(watch);
      signal.removeEventListener("abort", onAbort);
    }
    if (viewId(got) !== image.id) {
      throw new PreloadPullError(
        `the runtime pulled ${quote(ref)} and got image ${got}, not the preloaded ${image.id}: it took that name from somewhere other than imagelet's mirror ` +
          `(run \`imagelet mirror-config ${mirrorConfigKind(this.client.endpoint)}\`; docs/runtimes.md)`,
        Status.FAILED_PRECONDITION,
      );
    }
    await this.options.relist();
    log.info("the runtime pulled a preloaded image from the mirror", { image: image.id, reference: ref, ms: Math.round(performance.now() - started) });
  }

  private mirrorNotReached(image: Image, ref: string, cause: unknown): PreloadPullError {
    const kind = mirrorConfigKind(this.client.endpoint);
    const message =
      `the runtime's pull of preloaded image ${quote(ref)} never reached imagelet's mirror within ${this.options.mirrorWaitMs} ms: ` +
      `the runtime has no mirror configuration for it; run \`imagelet mirror-config ${kind}\`, apply what it prints and restart the runtime (docs/runtimes.md)`;
    this.reportOnce(image.id, message, { pullError: cause instanceof Error ? cause.message : String(cause) });
    return new PreloadPullError(message, Status.FAILED_PRECONDITION);
  }

  /** One log line per image and message, not one per kubelet retry. */
  private reportOnce(id: string, message: string, fields?: Record<string, unknown>): void {
    const key = `${id}\0${message}`;
    if (this.reported.has(key)) return;
    if (this.reported.size >= 1024) this.reported.clear();
    this.reported.add(key);
    this.options.log.error(message, { runtime: this.client.endpoint, image: id, ...fields });
  }
}

/** `promise`, or the signal's reason once it aborts (the promise keeps running for others). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
