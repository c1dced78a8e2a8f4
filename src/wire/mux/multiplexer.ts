import { Duplex } from "node:stream";
import type { Logger } from "../../base/log.js";
import { silentLogger } from "../../base/log.js";
import { FrameDecoder, FrameError, frameMessage } from "./frame.js";

export interface MultiplexerOptions {
  logger?: Logger;
}

const MAX_CONN_ID = 0xffff_ffff;

/**
 * NRI's connection multiplexer over one socket (the "trunk"). Logical connections need no handshake: open(id)
 * just starts routing that id, and the peer is assumed to use the same id (NRI: 1 = Plugin service served
 * by the plugin, 2 = Runtime service served by containerd). Frames for ids not open here are dropped.
 */
export class Multiplexer {
  /** Resolves once, with why the multiplexer closed: peer closed, socket error, garbage, or close(). */
  readonly closed: Promise<Error>;
  private readonly conns = new Map<number, MuxConnection>();
  private readonly full = new Set<MuxConnection>();
  private readonly decoder: FrameDecoder;
  private readonly logger: Logger;
  private reason: Error | undefined;
  private resolveClosed!: (reason: Error) => void;

  constructor(
    private readonly trunk: Duplex,
    options: MultiplexerOptions = {},
  ) {
    this.logger = (options.logger ?? silentLogger).child({ component: "nri-mux" });
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.decoder = new FrameDecoder((connId, payload) => this.route(connId, payload));
    trunk.on("data", (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
      } catch (err) {
        if (!(err instanceof FrameError)) throw err;
        this.fail(err);
        trunk.destroy();
      }
    });
    trunk.on("end", () => this.fail(this.peerClosed()));
    trunk.on("close", () => this.fail(this.peerClosed()));
    trunk.on("error", (err: NodeJS.ErrnoException) => {
      const abrupt = err.code === "ECONNRESET" || err.code === "EPIPE";
      const what = abrupt ? "the peer closed the socket abruptly" : "socket error";
      this.fail(new Error(`NRI multiplexer: ${what} (${err.message})`, { cause: err }));
    });
    if (trunk.destroyed) queueMicrotask(() => this.fail(this.peerClosed()));
  }

  get isClosed(): boolean {
    return this.reason !== undefined;
  }

  get closeReason(): Error | undefined {
    return this.reason;
  }

  /** The logical connection for `connId` (the same object while it stays open). */
  open(connId: number): MuxConnection {
    if (!Number.isInteger(connId) || connId < 1 || connId > MAX_CONN_ID) {
      throw new RangeError(
        `NRI multiplexer: connection id ${connId} is invalid; use 1..${MAX_CONN_ID} (0 is reserved)`,
      );
    }
    const existing = this.conns.get(connId);
    if (existing) return existing;
    const conn = new MuxConnection(this, connId);
    if (this.reason) {
      conn.terminate(this.reason);
      return conn;
    }
    this.conns.set(connId, conn);
    return conn;
  }

  /** Ends every logical connection and the socket (after flushing what was written). */
  close(): void {
    if (this.reason) return;
    this.fail(new Error("NRI multiplexer: closed locally"));
    this.trunk.end(() => this.trunk.destroy());
  }

  /** @internal Called by MuxConnection for each write(): one write is one ttrpc message. */
  sendMessage(connId: number, message: Buffer, callback: (err?: Error | null) => void): void {
    if (this.reason) {
      callback(new Error(`NRI multiplexer: cannot write to connection ${connId}: ${this.reason.message}`));
      return;
    }
    if (message.length === 0) {
      callback();
      return;
    }
    let frames: Buffer;
    try {
      frames = frameMessage(connId, message);
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.trunk.write(frames, (err) =>
      callback(err ? new Error(`NRI multiplexer: write failed: ${err.message}`) : null),
    );
  }

  /** @internal */
  forget(conn: MuxConnection): void {
    if (this.conns.get(conn.connId) === conn) this.conns.delete(conn.connId);
    this.unblock(conn);
  }

  /** @internal The consumer of `conn` wants more: resume the socket once no connection is full. */
  unblock(conn: MuxConnection): void {
    if (this.full.delete(conn) && this.full.size === 0 && !this.reason) this.trunk.resume();
  }

  private route(connId: number, payload: Buffer): void {
    const conn = this.conns.get(connId);
    if (!conn) {
      this.logger.debug(
        { connId, bytes: payload.length },
        "NRI multiplexer: frame for a connection not open here dropped",
      );
      return;
    }
    if (!conn.push(payload)) {
      // Backpressure instead of Go's "queue overflow kills the trunk": the socket waits for the slow reader.
      this.full.add(conn);
      this.trunk.pause();
    }
  }

  private peerClosed(): Error {
    const partial = this.decoder.partialBytes;
    return new Error(
      partial > 0
        ? `NRI multiplexer: the peer closed the socket in the middle of a frame (${partial} bytes of it received)`
        : "NRI multiplexer: the peer closed the socket",
    );
  }

  private fail(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.logger.debug({ reason: reason.message }, "NRI multiplexer closed");
    for (const conn of this.conns.values()) conn.terminate(reason);
    this.conns.clear();
    this.full.clear();
    this.resolveClosed(reason);
  }
}

/**
 * One logical connection of a Multiplexer, usable wherever a Duplex is (TtrpcClient, TtrpcServer).
 * Each write() must carry exactly one whole ttrpc message: that is where the first-frame rule is applied.
 * When the multiplexer closes, the readable side ends (EOF) and `closeReason` says why.
 */
export class MuxConnection extends Duplex {
  private reason: Error | undefined;

  constructor(
    private readonly mux: Multiplexer,
    readonly connId: number,
  ) {
    super({ allowHalfOpen: false });
  }

  get closeReason(): Error | undefined {
    return this.reason;
  }

  /** @internal */
  terminate(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.push(null);
  }

  override _read(): void {
    this.mux.unblock(this);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.mux.sendMessage(this.connId, chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    // NRI's multiplexer has no per-connection close message: ending one side tells the peer nothing.
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.reason ??= err ?? new Error(`NRI multiplexer: connection ${this.connId} closed locally`);
    this.mux.forget(this);
    callback(err);
  }
}
