import type { Duplex } from "node:stream";
import { Deadline } from "../../base/deadline.js";
import type { Logger } from "../../base/log.js";
import { silentLogger } from "../../base/log.js";
import { type IncomingMessage, MessageChannel } from "./channel.js";
import { MessageType, messageTypeName } from "./header.js";
import { decodeResponse, encodeRequest, type KeyValue } from "./messages.js";
import { Code, TtrpcError } from "./status.js";

export interface CallOptions {
  /** The call fails with DEADLINE_EXCEEDED after this long; also sent to the server as timeout_nano. */
  timeoutMs?: number;
  /** Request metadata; several values per key are sent as several entries, as Go's ttrpc does. */
  metadata?: Record<string, string | readonly string[]>;
  /** Aborting rejects the call with CANCELLED (the server is not told: ttrpc has no cancel message). */
  signal?: AbortSignal;
}

export interface TtrpcClientOptions {
  logger?: Logger;
}

interface PendingCall {
  fullMethod: string;
  resolve(payload: Uint8Array): void;
  reject(err: TtrpcError): void;
}

const MAX_STREAM_ID = 0xffff_ffff;

/** A unary ttrpc client over any Duplex: a plain socket or a multiplexer connection. */
export class TtrpcClient {
  private readonly channel: MessageChannel;
  private readonly pending = new Map<number, PendingCall>();
  private readonly logger: Logger;
  private nextStreamId = 1;

  constructor(conn: Duplex, options: TtrpcClientOptions = {}) {
    this.logger = (options.logger ?? silentLogger).child({ component: "ttrpc-client" });
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.channel = new MessageChannel(conn, {
      onMessage: (message) => this.onMessage(message),
      onClose: (reason) => this.onClose(reason),
    });
  }

  /** Resolves once, with why the connection closed; every later call fails with UNAVAILABLE. */
  readonly closed: Promise<Error>;
  private resolveClosed!: (reason: Error) => void;

  get isClosed(): boolean {
    return this.channel.closed;
  }

  /**
   * Calls `service/method` with an already encoded request message and resolves with the encoded response
   * message. Rejects with TtrpcError: the server's status, DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE (closed
   * connection) or RESOURCE_EXHAUSTED (request above 4 MiB, nothing sent).
   */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Uint8Array> {
    const fullMethod = `${service}/${method}`;
    const { signal, timeoutMs } = options;
    if (signal?.aborted) {
      return Promise.reject(
        new TtrpcError(Code.CANCELLED, `ttrpc: ${fullMethod} was cancelled before it was sent`),
      );
    }
    if (this.channel.closed) return Promise.reject(this.unavailable(fullMethod));
    if (this.nextStreamId > MAX_STREAM_ID) {
      return Promise.reject(
        new TtrpcError(
          Code.RESOURCE_EXHAUSTED,
          `ttrpc: this connection has used all its stream ids; open a new connection to call ${fullMethod}`,
        ),
      );
    }
    const streamId = this.nextStreamId;
    const timed = timeoutMs !== undefined && timeoutMs > 0;
    const request = encodeRequest({
      service,
      method,
      payload,
      timeoutNano: timed ? Math.round(timeoutMs * 1e6) : 0,
      metadata: toKeyValues(options.metadata),
    });
    try {
      this.channel.send(streamId, MessageType.REQUEST, 0, request);
    } catch (err) {
      return Promise.reject(
        err instanceof TtrpcError
          ? err
          : new TtrpcError(Code.INTERNAL, `ttrpc: ${fullMethod}: ${String(err)}`),
      );
    }
    // Ids advance only for requests that went out: the server requires them to increase, not to be dense.
    this.nextStreamId += 2;
    const answer = new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(streamId, { fullMethod, resolve, reject });
    });
    if (!timed && !signal) return answer;
    const deadline = timed
      ? Deadline.after(timeoutMs, { ...(signal ? { parent: signal } : {}) })
      : Deadline.never({ ...(signal ? { parent: signal } : {}) });
    return deadline
      .race(answer, () =>
        signal?.aborted
          ? new TtrpcError(Code.CANCELLED, `ttrpc: ${fullMethod} (stream ${streamId}) was cancelled`)
          : new TtrpcError(
              Code.DEADLINE_EXCEEDED,
              `ttrpc: ${fullMethod} (stream ${streamId}) got no answer within its ${timeoutMs} ms deadline`,
            ),
      )
      .finally(() => {
        // A late answer then finds no pending call and is dropped, as Go's client does.
        this.pending.delete(streamId);
        deadline.dispose();
      });
  }

  /** Closes the connection; pending calls fail with UNAVAILABLE. */
  close(): void {
    this.channel.close(new Error("ttrpc: client closed locally"));
  }

  private onMessage(message: IncomingMessage): void {
    const { header } = message;
    const call = this.pending.get(header.streamId);
    this.pending.delete(header.streamId);
    if (!call) {
      // Late answers to calls that timed out land here; Go's client logs and drops them too.
      this.logger.debug(
        { streamId: header.streamId, type: header.type },
        "ttrpc: message for no pending call dropped",
      );
      return;
    }
    if (message.oversized) {
      call.reject(
        new TtrpcError(
          Code.RESOURCE_EXHAUSTED,
          `ttrpc: the answer to ${call.fullMethod} was ${header.dataLength} bytes, above the ${4 << 20}-byte maximum message size`,
        ),
      );
      return;
    }
    if (header.type !== MessageType.RESPONSE) {
      call.reject(
        new TtrpcError(
          Code.INTERNAL,
          `ttrpc: protocol error: the server sent a ${messageTypeName(header.type)} message to unary call ${call.fullMethod}; streaming is not supported`,
        ),
      );
      return;
    }
    let response: ReturnType<typeof decodeResponse>;
    try {
      response = decodeResponse(message.data);
    } catch (err) {
      call.reject(
        new TtrpcError(
          Code.INTERNAL,
          `ttrpc: could not decode the Response to ${call.fullMethod}: ${(err as Error).message}`,
        ),
      );
      return;
    }
    const status = response.status;
    if (status && status.code !== Code.OK) {
      call.reject(
        new TtrpcError(status.code, status.message || `${call.fullMethod} failed with code ${status.code}`),
      );
      return;
    }
    call.resolve(response.payload);
  }

  private onClose(reason: Error): void {
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const call of calls) {
      call.reject(
        new TtrpcError(Code.UNAVAILABLE, `${reason.message} (while waiting for ${call.fullMethod})`, {
          cause: reason,
        }),
      );
    }
    this.resolveClosed(reason);
  }

  private unavailable(fullMethod: string): TtrpcError {
    const reason = this.channel.reason;
    return new TtrpcError(
      Code.UNAVAILABLE,
      `ttrpc: cannot call ${fullMethod}: the connection is closed${reason ? ` (${reason.message})` : ""}; reconnect first`,
      { cause: reason },
    );
  }
}

function toKeyValues(metadata: CallOptions["metadata"]): KeyValue[] {
  if (!metadata) return [];
  const out: KeyValue[] = [];
  for (const [key, value] of Object.entries(metadata)) {
    for (const v of typeof value === "string" ? [value] : value) out.push({ key, value: v });
  }
  return out;
}
