// MirrorServer: the registry mirror, started only when the config has a
// [mirror] table (src/server/mirror-listener.ts loads this folder then, and
// never otherwise). Its port is served from a sender thread (sender.ts) and
// its requests are answered here, on the thread that owns the backend
// registry, by DistributionRoutes; sender-protocol.ts is what passes between.
import type { Logger } from "../backend/contract";
import { formatListenAddress, isLoopback, type ListenAddress } from "../config/listen";
import { errorText } from "../model/error-text";
import type { ServedRegistry } from "../registry/served";
import type { MirrorRequestCounter } from "../runtime/mirror-witness";
import { DistributionRoutes } from "./distribution";
import { errorReply, MirrorError } from "./errors";
import { isFileRegion, type Reply } from "./reply";
import type { FromSender, ToSender, WireBody } from "./sender-protocol";

/** Requests are GET and HEAD: a body is never read, so a large one is refused early. */
const MAX_REQUEST_BODY_BYTES = 64 * 1024;

/**
 * The sender's module. In the compiled binary it is the build's second
 * entry point (scripts/build-binary.ts), stored beside the main one under
 * the binary's own root; from source it is this file's neighbour.
 */
const SENDER_URL = import.meta.url.startsWith("file:///$bunfs/") ? new URL("./mirror/sender.ts", import.meta.url) : new URL("./sender.ts", import.meta.url);

/** A request in the handlers' hands: its client's signal, and the stream its body is read from, once there is one. */
interface InFlight {
  client: AbortController;
  reader?: ReadableStreamDefaultReader<Uint8Array>;
}

export class MirrorServer {
  private readonly inFlight = new Map<number, InFlight>();
  private sender!: Worker;
  private stopping = false;
  private boundPort = 0;
  /** HOST:PORT as bound (the port the system chose, for port 0). */
  address = "";

  private constructor(
    private readonly listen: ListenAddress,
    private readonly routes: DistributionRoutes,
    private readonly log: Logger,
    private readonly senderUrl: URL,
  ) {}

  /**
   * Binds `listen` and serves `served`'s view; throws when the address cannot be bound.
   * `senderUrl`: the sender's module (a test gives one that fails on purpose).
   */
  static async start(listen: ListenAddress, served: ServedRegistry, log: Logger, witness?: MirrorRequestCounter, senderUrl = SENDER_URL): Promise<MirrorServer> {
    const server = new MirrorServer(listen, new DistributionRoutes(served, log, witness), log, senderUrl);
    const port = await server.startSender(listen.port);
    server.address = formatListenAddress({ host: listen.host, port });
    if (!isLoopback(listen.host)) {
      log.warn("the registry mirror listens beyond this machine: anyone who can reach this address can read every image imagelet serves, without authentication", { listen: server.address });
    }
    return server;
  }

  /** Starts the sender thread on `port`; resolves with the port it bound, or rejects with why it could not. */
  private startSender(port: number): Promise<number> {
    // smol: a small heap for a thread that only passes bytes on. Over the mirror bench the
    // containers-storage server's RSS grew 1.2-2.2 MiB with it and 8-21 MiB without; its re-created
    // layer took ~0.2x more of distribution's time (1.6x against 1.4x; the target is 2x).
    const sender = new Worker(this.senderUrl, { smol: true });
    this.sender = sender;
    return new Promise<number>((resolve, reject) => {
      let bound = false;
      sender.onmessage = (event: MessageEvent<FromSender>) => {
        const m = event.data;
        if (m.t === "listening") {
          bound = true;
          this.boundPort = m.port;
          resolve(m.port);
        } else if (m.t === "failed") {
          reject(new Error(m.error));
          sender.terminate();
        } else {
          this.received(m);
        }
      };
      sender.addEventListener("error", (event) => {
        const error = (event as ErrorEvent).message;
        if (!bound) reject(new Error(`the mirror's sender thread failed to start: ${error}`));
        else this.log.error("mirror: the sender thread failed", { error });
      });
      sender.addEventListener("close", () => {
        if (this.sender !== sender || this.stopping || !bound) return;
        // Not expected: the sender never throws. Downloads in flight are lost; the port is served again.
        this.log.error("mirror: the sender thread ended; starting it again", { listen: this.address });
        for (const id of [...this.inFlight.keys()]) this.gone(id);
        // The port it had bound (the system's choice, for port 0): clients and runtimes know that one.
        this.startSender(this.boundPort).catch((e) => this.log.error("mirror: the sender thread could not start again; the mirror is down", { error: errorText(e) }));
      });
      this.post({ t: "listen", host: this.listen.host, port, maxRequestBodySize: MAX_REQUEST_BODY_BYTES });
    });
  }

  private post(message: ToSender): void {
    this.sender.postMessage(message);
  }

  private received(m: FromSender): void {
    switch (m.t) {
      case "request":
        return void this.answer(m.id, m.method, m.url, m.range);
      case "more":
        return void this.more(m.id);
      case "gone":
        return this.gone(m.id);
      case "log":
        return this.log[m.level](m.message, m.fields);
    }
  }

  private async answer(id: number, method: string, url: string, range: string | null): Promise<void> {
    const flight: InFlight = { client: new AbortController() };
    this.inFlight.set(id, flight);
    let reply: Reply;
    try {
      reply = await this.routes.answer({ method, url, range, signal: flight.client.signal });
    } catch (e) {
      // answer() turns every failure into an error reply; this is the net under it.
      this.log.error("mirror: request failed", { method, url: url.slice(0, 300), error: errorText(e) });
      reply = errorReply(new MirrorError("NOT_FOUND", "internal error; imagelet's log has it"), method);
    }
    const body = this.wireBody(reply, flight);
    if (flight.reader === undefined) this.inFlight.delete(id);
    this.post({ t: "reply", id, status: reply.status, headers: reply.headers, body });
  }

  private wireBody(reply: Reply, flight: InFlight): WireBody | undefined {
    const { body } = reply;
    if (body === undefined) return undefined;
    if (body instanceof Uint8Array) return { bytes: body };
    if (isFileRegion(body)) return { file: body };
    const reader = body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    flight.reader = reader;
    // A client that left while the handlers worked: nothing will ask for the body.
    if (flight.client.signal.aborted) void reader.cancel();
    return { stream: true };
  }

  /** The sender can take one more chunk of `id`'s stream. */
  private async more(id: number): Promise<void> {
    const flight = this.inFlight.get(id);
    if (!flight?.reader) return;
    try {
      const next = await flight.reader.read();
      if (this.inFlight.get(id) !== flight) return;
      if (next.done) {
        this.inFlight.delete(id);
        this.post({ t: "end", id });
      } else if (next.value.byteLength === 0) {
        // Only a buffer moved to the sender before reads as empty here (empty chunks are dropped
        // before): the body yielded it again. Its bytes are gone, so the download fails loudly.
        this.inFlight.delete(id);
        this.post({ t: "fail", id, reason: "the body yielded a buffer it had already yielded" });
      } else {
        this.postChunk(id, next.value);
      }
    } catch (e) {
      if (this.inFlight.get(id) !== flight) return;
      this.inFlight.delete(id);
      this.post({ t: "fail", id, reason: errorText(e) });
    }
  }

  /**
   * A chunk that owns its whole buffer is moved to the sender, not copied:
   * a body's chunks are its own once yielded (a ReadableStream's contract).
   * Copying them held re-created layers at 2.3× distribution's time, against
   * 1.4× on one thread.
   */
  private postChunk(id: number, bytes: Uint8Array): void {
    const message: ToSender = { t: "chunk", id, bytes };
    if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) this.sender.postMessage(message, [bytes.buffer]);
    else this.sender.postMessage(message);
  }

  /** The client of `id` left: stop reading its body (the body's own cancel releases its store). */
  private gone(id: number): void {
    const flight = this.inFlight.get(id);
    if (!flight) return;
    this.inFlight.delete(id);
    flight.client.abort(new Error("the client went away"));
    void flight.reader?.cancel().catch(() => {});
  }

  /** Stops accepting; downloads in flight get `graceMs` to finish, then are cut. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const sender = this.sender;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs + 1000);
      sender.addEventListener("message", (event: MessageEvent<FromSender>) => {
        if (event.data.t !== "stopped") return;
        clearTimeout(timer);
        resolve();
      });
      this.post({ t: "stop", graceMs });
    });
    for (const id of [...this.inFlight.keys()]) this.gone(id);
    sender.terminate();
  }

  stopNow(): void {
    this.stopping = true;
    for (const id of [...this.inFlight.keys()]) this.gone(id);
    this.sender.terminate();
  }
}
