// A CRI ImageService client of the node's runtime (front mode's `[runtime]
// endpoint`). Every call has a deadline; the channel reconnects by itself
// while the runtime is down or restarting, and the state it last saw (up,
// down, the last error) is what `imagelet plugins` shows. A runtime that is
// down is an error value here (RuntimeUnavailableError), never a crash: the
// stores are still served.
import { ClientError, Status, createChannel, createClient, type Channel } from "nice-grpc";
import type { Logger } from "../backend/contract";
import type { runtime } from "../gen/runtime-v1.js";
import { ImageServiceDefinition } from "../gen/runtime-v1-services";
import { endpointTarget } from "./endpoint";
import { RuntimeCallError, RuntimeUnavailableError } from "./errors";

export { RuntimeCallError, RuntimeUnavailableError };

export type RuntimeImage = runtime.v1.Image.$Properties;
export type RuntimeFilesystem = runtime.v1.FilesystemUsage.$Properties;

export interface RuntimeState {
  endpoint: string;
  /** "unknown" until the first call ends. */
  state: "unknown" | "up" | "down";
  /** When it entered this state (RFC 3339). */
  since?: string;
  lastError?: string;
  lastErrorAt?: string;
}

/**
 * grpc-js backs off up to 120 s between reconnection attempts by default; a
 * runtime restarted by systemd is back within seconds, and kubelet's next call
 * must find it, so the back-off stays short (a unix socket costs nothing to try).
 */
const CHANNEL_OPTIONS = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
  // containerd's own send limit is 16 MiB; a ListImages above grpc-js's 4 MiB default must still be read.
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
};

export class RuntimeClient {
  private readonly channel: Channel;
  private readonly client;
  private current: RuntimeState;

  constructor(
    readonly endpoint: string,
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {
    this.channel = createChannel(endpointTarget(endpoint), undefined, CHANNEL_OPTIONS);
    this.client = createClient(ImageServiceDefinition, this.channel);
    this.current = { endpoint, state: "unknown" };
  }

  get state(): RuntimeState {
    return { ...this.current };
  }

  async listImages(signal?: AbortSignal): Promise<RuntimeImage[]> {
    return (await this.call("ListImages", (s) => this.client.listImages({}, { signal: s }), signal)).images;
  }

  /** The runtime's image for `ref`, or undefined when it has none. */
  async imageStatus(ref: string, signal?: AbortSignal): Promise<RuntimeImage | undefined> {
    const r = await this.call("ImageStatus", (s) => this.client.imageStatus({ image: { image: ref } }, { signal: s }), signal);
    return r.image ?? undefined;
  }

  /**
   * PullImage: the image ID the runtime reports. No deadline of its own (a
   * pull takes as long as the image's size needs): `signal` ends it.
   */
  async pullImage(request: runtime.v1.PullImageRequest.$Properties, signal: AbortSignal): Promise<string> {
    return (await this.call("PullImage", (s) => this.client.pullImage(request, { signal: s }), signal, false)).imageRef;
  }

  async removeImage(ref: string, signal?: AbortSignal): Promise<void> {
    await this.call("RemoveImage", (s) => this.client.removeImage({ image: { image: ref } }, { signal: s }), signal);
  }

  async imageFsInfo(signal?: AbortSignal): Promise<RuntimeFilesystem[]> {
    return (await this.call("ImageFsInfo", (s) => this.client.imageFsInfo({}, { signal: s }), signal)).imageFilesystems;
  }

  close(): void {
    this.channel.close();
  }

  /**
   * One call under the deadline (unless `deadline` is false), the caller's
   * signal honoured. Reaching the runtime at all is what "up" means: an error
   * the runtime answers with keeps it up.
   */
  private async call<T>(method: string, fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal, deadline = true): Promise<T> {
    const signals = [signal, deadline ? AbortSignal.timeout(this.timeoutMs) : undefined].filter((s): s is AbortSignal => s !== undefined);
    const combined = signals.length === 0 ? new AbortController().signal : AbortSignal.any(signals);
    try {
      const result = await fn(combined);
      this.become("up");
      return result;
    } catch (e) {
      if (e instanceof ClientError) {
        if (e.code === Status.UNAVAILABLE) throw this.down(e.details);
        this.become("up");
        throw new RuntimeCallError(this.endpoint, e.code, method, e.details);
      }
      // Aborted: by the caller (its error is its own) or by the deadline (the runtime hangs).
      if (signal?.aborted) throw e;
      if (combined.aborted) throw this.down(`${method} got no answer within ${this.timeoutMs} ms`);
      throw e;
    }
  }

  private down(detail: string): RuntimeUnavailableError {
    const now = new Date().toISOString();
    this.current.lastError = detail;
    this.current.lastErrorAt = now;
    this.become("down", detail);
    return new RuntimeUnavailableError(this.endpoint, detail);
  }

  private become(state: "up" | "down", detail?: string): void {
    if (this.current.state === state) return;
    const was = this.current.state;
    this.current.state = state;
    this.current.since = new Date().toISOString();
    // Said once per change, not on every call while it lasts.
    if (state === "down") this.log.warn("container runtime unavailable; imagelet serves its stores and reconnects", { runtime: this.endpoint, error: detail });
    else if (was === "down") this.log.info("container runtime reachable again", { runtime: this.endpoint });
  }
}
