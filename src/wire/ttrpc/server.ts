import type { Duplex } from "node:stream";
import { Deadline } from "../../base/deadline.js";
import type { Logger } from "../../base/log.js";
import { silentLogger } from "../../base/log.js";
import { type IncomingMessage, MessageChannel } from "./channel.js";
import { MAX_DATA_LENGTH, MessageType } from "./header.js";
import { decodeRequest, encodeResponse, type Request } from "./messages.js";
import { Code, TtrpcError } from "./status.js";

export interface CallContext {
  service: string;
  method: string;
  streamId: number;
  /** Absolute deadline (ms since the epoch) from the request's timeout_nano; absent when it sent none. */
  deadline?: number;
  /** Request metadata, values per key in arrival order (tracing keys included; nothing here uses them). */
  metadata: Record<string, string[]>;
  /** Aborted when the deadline passes or the connection closes; the answer is then no longer wanted. */
  signal: AbortSignal;
}

/** Takes the encoded request message, returns the encoded response message. Throw a TtrpcError to pick the status. */
export type MethodHandler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array> | Uint8Array;

export type ServiceHandlers = Record<string, MethodHandler>;

export interface TtrpcServerOptions {
  logger?: Logger;
}

/** One connection being served. */
export interface ServedConnection {
  /** Resolves with the reason once the connection is closed (by the peer, an error or close()). */
  readonly closed: Promise<Error>;
  close(): void;
}

/**
 * A unary ttrpc server over any Duplex. Mirrors containerd/ttrpc's answers: UNIMPLEMENTED for unknown
 * services and methods, INVALID_ARGUMENT for even or non-increasing stream ids (the connection stays up),
 * RESOURCE_EXHAUSTED for requests above 4 MiB, UNKNOWN for plain exceptions.
 */
export class TtrpcServer {
  private readonly services = new Map<string, ServiceHandlers>();
  private readonly logger: Logger;

  constructor(options: TtrpcServerOptions = {}) {
    this.logger = (options.logger ?? silentLogger).child({ component: "ttrpc-server" });
  }

  register(service: string, handlers: ServiceHandlers): this {
    if (this.services.has(service)) {
      throw new Error(`ttrpc: service ${service} is already registered; register each service once`);
    }
    this.services.set(service, { ...handlers });
    return this;
  }

  serve(conn: Duplex): ServedConnection {
    return new ServerConnection(conn, this.services, this.logger);
  }
}

class ServerConnection implements ServedConnection {
  readonly closed: Promise<Error>;
  private readonly channel: MessageChannel;
  /** Calls still running: aborting one also stops its deadline's timer. */
  private readonly inFlight = new Map<number, (reason: Error) => void>();
  private lastStreamId = 0;
  private resolveClosed!: (reason: Error) => void;

  constructor(
    conn: Duplex,
    private readonly services: ReadonlyMap<string, ServiceHandlers>,
    private readonly logger: Logger,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.channel = new MessageChannel(conn, {
      onMessage: (message) => this.onMessage(message),
      onClose: (reason) => this.onClose(reason),
    });
  }

  close(): void {
    this.channel.close(new Error("ttrpc: server closed the connection"));
  }

  private onClose(reason: Error): void {
    for (const abort of this.inFlight.values()) abort(reason);
    this.inFlight.clear();
    this.logger.debug({ reason: reason.message }, "ttrpc: connection closed");
    this.resolveClosed(reason);
  }

  private onMessage(message: IncomingMessage): void {
    const { header } = message;
    if (message.oversized) {
      this.sendStatus(
        header.streamId,
        Code.RESOURCE_EXHAUSTED,
        `message length ${header.dataLength} exceed maximum message size of ${MAX_DATA_LENGTH}`,
      );
      return;
    }
    if (header.streamId % 2 !== 1) {
      this.sendStatus(
        header.streamId,
        Code.INVALID_ARGUMENT,
        "StreamID must be odd for client initiated streams",
      );
      return;
    }
    if (header.type === MessageType.DATA) {
      this.sendStatus(
        header.streamId,
        Code.INVALID_ARGUMENT,
        "StreamID is no longer active: this server has no streaming methods",
      );
      return;
    }
    if (header.type !== MessageType.REQUEST) {
      // Go's server ignores other types for forward compatibility.
      this.logger.debug(
        { streamId: header.streamId, type: header.type },
        "ttrpc: non-request message ignored",
      );
      return;
    }
    if (header.streamId <= this.lastStreamId) {
      this.sendStatus(
        header.streamId,
        Code.INVALID_ARGUMENT,
        "StreamID cannot be re-used and must increment",
      );
      return;
    }
    this.lastStreamId = header.streamId;
    let request: Request;
    try {
      request = decodeRequest(message.data);
    } catch (err) {
      this.sendStatus(
        header.streamId,
        Code.INVALID_ARGUMENT,
        `unmarshal request error: ${(err as Error).message}`,
      );
      return;
    }
    this.dispatch(header.streamId, request);
  }

  private dispatch(streamId: number, request: Request): void {
    const { service, method } = request;
    const handlers = this.services.get(service);
    if (!handlers) {
      const known = [...this.services.keys()].join(", ") || "none";
      this.sendStatus(
        streamId,
        Code.UNIMPLEMENTED,
        `service ${service}: not served here (services: ${known})`,
      );
      return;
    }
    const handler = Object.hasOwn(handlers, method) ? handlers[method] : undefined;
    if (!handler) {
      this.sendStatus(
        streamId,
        Code.UNIMPLEMENTED,
        `method ${method}: not implemented by service ${service}`,
      );
      return;
    }

    const fullMethod = `${service}/${method}`;
    const timeoutMs = request.timeoutNano / 1e6;
    if (request.timeoutNano !== 0 && timeoutMs <= 0) {
      this.sendStatus(streamId, Code.DEADLINE_EXCEEDED, deadlineExceeded(fullMethod, timeoutMs).message);
      return;
    }
    const deadline =
      request.timeoutNano !== 0 ? Deadline.after(timeoutMs, { what: fullMethod }) : Deadline.never();
    // Not the deadline's own signal: the handler's carries a TtrpcError, so rethrowing it picks the status.
    const controller = new AbortController();
    this.inFlight.set(streamId, (reason) => {
      deadline.dispose();
      controller.abort(reason);
    });
    let answered = false;
    const answer = (code: number, message: string, payload?: Uint8Array): void => {
      if (answered) return;
      answered = true;
      deadline.dispose();
      this.inFlight.delete(streamId);
      if (code === Code.OK && payload) this.sendPayload(streamId, fullMethod, payload);
      else this.sendStatus(streamId, code, message);
    };
    const expired = (): TtrpcError => {
      const err = deadlineExceeded(fullMethod, timeoutMs);
      controller.abort(err);
      return err;
    };

    const ctx: CallContext = {
      service,
      method,
      streamId,
      ...(Number.isFinite(deadline.at) ? { deadline: deadline.at } : {}),
      metadata: toMetadata(request.metadata),
      signal: controller.signal,
    };
    // Raced, so the deadline's timer keeps the process up while the handler runs.
    deadline
      .race(
        Promise.resolve().then(() => handler(request.payload, ctx)),
        expired,
      )
      .then(
        (payload) => {
          if (!(payload instanceof Uint8Array)) {
            answer(
              Code.INTERNAL,
              `${fullMethod} handler returned ${typeof payload}, expected an encoded message (Uint8Array)`,
            );
            return;
          }
          answer(Code.OK, "", payload);
        },
        (err: unknown) => {
          if (err instanceof TtrpcError) answer(err.code, err.message);
          else answer(Code.UNKNOWN, err instanceof Error ? err.message : String(err));
          if (!(err instanceof TtrpcError)) this.logger.debug({ err, fullMethod }, "ttrpc: handler failed");
        },
      );
  }

  private sendPayload(streamId: number, fullMethod: string, payload: Uint8Array): void {
    const response = encodeResponse({ status: { code: Code.OK, message: "" }, payload });
    if (response.length > MAX_DATA_LENGTH) {
      // Go's server drops the whole connection here; answering keeps the other calls alive.
      this.sendStatus(
        streamId,
        Code.RESOURCE_EXHAUSTED,
        `${fullMethod} response of ${response.length} bytes exceeds the maximum message size of ${MAX_DATA_LENGTH}`,
      );
      return;
    }
    this.write(streamId, response);
  }

  private sendStatus(streamId: number, code: number, message: string): void {
    this.write(streamId, encodeResponse({ status: { code, message }, payload: new Uint8Array(0) }));
  }

  private write(streamId: number, response: Uint8Array): void {
    if (this.channel.closed) return;
    try {
      this.channel.send(streamId, MessageType.RESPONSE, 0, response);
    } catch (err) {
      // Only a status message echoing a huge request can get here; the client's own deadline covers it.
      this.logger.warn({ err, streamId }, "ttrpc: could not send a response");
    }
  }
}

function deadlineExceeded(fullMethod: string, timeoutMs: number): TtrpcError {
  return new TtrpcError(
    Code.DEADLINE_EXCEEDED,
    `${fullMethod} did not finish within the caller's deadline of ${timeoutMs} ms`,
  );
}

function toMetadata(pairs: readonly { key: string; value: string }[]): Record<string, string[]> {
  const out: Record<string, string[]> = Object.create(null);
  for (const { key, value } of pairs) {
    const values = out[key];
    if (values) values.push(value);
    else out[key] = [value];
  }
  return out;
}
