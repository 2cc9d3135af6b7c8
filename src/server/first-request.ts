// Which way a new client connection goes to the gRPC server, decided from its
// first request's `:authority`:
//   - as sent: the socket itself is handed to the server (after the bytes
//     read so far are put back), the fast path of Bun's HTTP/2;
//   - rewritten: through NormalizedConnection, whose every header block is
//     followed and fixed (h2-authority.ts). It costs about a quarter of the
//     throughput, so only clients that need it (kubelet and crictl before
//     v1.30, which send the socket path) pay for it.
// A client sends one `:authority` on all its calls (gRPC clients use their
// channel's target), so the first call decides for the connection.
//
// grpc-go does not send a request before it has the server's connection
// preface (a SETTINGS frame), and the server must not start before the
// decision. So when the client's first bytes hold no request, imagelet sends
// an empty SETTINGS itself (every setting at its default, which the client
// assumes until then anyway) and removes the client's acknowledgement of it
// before the server sees the stream; the server then sends its own SETTINGS,
// as a server may at any time.
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../backend/contract";
import { CLIENT_PREFACE, ClientHeaderRewriter, goawayFrame, H2_ERROR, H2StreamError, MAX_HEADER_BLOCK_BYTES } from "./h2-authority";
import { NormalizedConnection } from "./normalized-connection";

const FRAME_HEADER_BYTES = 9;
const TYPE_HEADERS = 0x1;
const TYPE_SETTINGS = 0x4;
const FLAG_ACK = 0x1;
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0]);
/** Client bytes held before a decision; past this the connection takes the careful path. */
const MAX_HELD_BYTES = MAX_HEADER_BLOCK_BYTES + 16 * 1024;

export interface Decision {
  /** True when the first request's `:authority` needed a rewrite. */
  rewrite: boolean;
  /** The client's bytes so far (without the acknowledgement of imagelet's SETTINGS), to hand on. */
  bytes: Buffer;
  /** With `rewrite`: the rewriter that followed those bytes, and its output for them. */
  rewriter: ClientHeaderRewriter;
  rewritten: Buffer[];
}

/** Follows a connection's first client bytes up to the end of its first header block. */
export class FirstRequestSniffer {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private unparsed: Buffer = Buffer.alloc(0);
  private prefaceSeen = false;
  private settingsSent = false;
  private ackRemoved = false;
  private headersBegun = false;
  private firstBlockRewritten: boolean | undefined;
  private readonly rewritten: Buffer[] = [];
  private readonly rewriter = new ClientHeaderRewriter((b) => this.rewritten.push(b));

  /** `sendToClient` writes imagelet's own SETTINGS when the client waits for one. */
  constructor(private readonly sendToClient: (bytes: Buffer) => void) {
    this.rewriter.onHeaderBlock = (rewritten) => (this.firstBlockRewritten ??= rewritten);
  }

  /** Client bytes in; a decision once there is one. Throws H2StreamError for a stream that cannot be followed. */
  feed(chunk: Buffer): Decision | undefined {
    this.unparsed = this.unparsed.length === 0 ? chunk : Buffer.concat([this.unparsed, chunk]);
    if (!this.prefaceSeen) {
      if (this.unparsed.length < CLIENT_PREFACE.length) return undefined;
      // Not HTTP/2 (or a client speaking first in some other way): the server answers it as it would.
      if (!this.unparsed.subarray(0, CLIENT_PREFACE.length).equals(CLIENT_PREFACE)) return this.decide(false);
      this.prefaceSeen = true;
      this.take(this.unparsed.subarray(0, CLIENT_PREFACE.length));
      this.unparsed = this.unparsed.subarray(CLIENT_PREFACE.length);
    }
    while (this.unparsed.length >= FRAME_HEADER_BYTES) {
      const length = FRAME_HEADER_BYTES + this.unparsed.readUIntBE(0, 3);
      if (this.unparsed.length < length) break;
      const frame = this.unparsed.subarray(0, length);
      this.unparsed = this.unparsed.subarray(length);
      const type = frame[3];
      if (this.settingsSent && !this.ackRemoved && type === TYPE_SETTINGS && ((frame[4] ?? 0) & FLAG_ACK) !== 0) {
        this.ackRemoved = true; // answers imagelet's SETTINGS, which the server never sent
        continue;
      }
      if (type === TYPE_HEADERS) this.headersBegun = true;
      this.take(frame);
    }
    if (!this.settingsSent && !this.headersBegun) {
      this.settingsSent = true;
      this.sendToClient(EMPTY_SETTINGS);
    }
    if (this.firstBlockRewritten !== undefined && (!this.settingsSent || this.ackRemoved)) return this.decide(this.firstBlockRewritten);
    if (this.heldBytes + this.unparsed.length > MAX_HELD_BYTES) return this.decide(true);
    return undefined;
  }

  private take(bytes: Buffer): void {
    this.held.push(bytes);
    this.heldBytes += bytes.length;
    this.rewriter.feed(bytes);
  }

  private decide(rewrite: boolean): Decision {
    if (this.unparsed.length > 0) {
      this.held.push(this.unparsed);
      if (rewrite) this.rewriter.feed(this.unparsed);
    }
    return { rewrite, bytes: Buffer.concat(this.held), rewriter: this.rewriter, rewritten: this.rewritten };
  }
}

/**
 * Holds a new client connection until its first request shows which way it
 * goes, then hands it to the gRPC server (`inject`) as the socket itself or
 * as a NormalizedConnection.
 */
export function handOverConnection(socket: Socket, log: Logger, inject: (connection: Duplex) => void): void {
  // A socket error (a client resetting) must never be unhandled: it would end the process.
  socket.on("error", () => socket.destroy());
  const sniffer = new FirstRequestSniffer((bytes) => socket.write(bytes));
  const onData = (chunk: Buffer) => {
    let decision: Decision | undefined;
    try {
      decision = sniffer.feed(chunk);
    } catch (e) {
      log.warn("closing client connection", { reason: e instanceof H2StreamError ? e.message : String(e) });
      // No request was taken (last stream 0); the GOAWAY says why. A client
      // that does not read it is closed by ConnectionWatch's flush grace.
      socket.off("data", onData);
      socket.end(goawayFrame(0, e instanceof H2StreamError ? e.code : H2_ERROR.INTERNAL_ERROR));
      return;
    }
    if (decision === undefined) return;
    socket.off("data", onData);
    socket.pause();
    if (decision.rewrite) {
      log.debug("client connection: path :authority, header blocks rewritten");
      inject(new NormalizedConnection(socket, log, decision.rewriter, decision.rewritten));
    } else {
      socket.unshift(decision.bytes);
      inject(socket);
    }
    socket.resume();
  };
  socket.on("data", onData);
}
