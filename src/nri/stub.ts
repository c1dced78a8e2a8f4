import { EventEmitter } from "node:events";
import { delay } from "../base/deadline.js";
import type { Logger } from "../base/log.js";
import { subscriptionMask } from "./events.js";
import type { NriHandlers } from "./handlers.js";
import { openSession, type Session } from "./session.js";

export interface StubOptions {
  socketPath: string;
  pluginName: string;
  /** Two digits, "00"–"99": containerd calls plugins in ascending index order. */
  pluginIndex: string;
  log: Logger;
  registrationTimeoutMs?: number;
  /** Reconnect backoff: first wait and cap. Kept short so a restarted containerd sees the plugin back at once. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

export interface StubEvents {
  registered: [runtime: string];
  disconnected: [reason: string];
}

/**
 * An NRI plugin's connection to its runtime, kept alive: registers, and after the runtime restarts or drops
 * the plugin (a missed deadline does that), reconnects with backoff and synchronizes again.
 */
export class NriStub extends EventEmitter<StubEvents> {
  private session: Session | undefined;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();

  constructor(
    private readonly handlers: NriHandlers,
    private readonly options: StubOptions,
  ) {
    super();
    if (!/^\d\d$/.test(options.pluginIndex)) {
      throw new Error(`plugin index must be two digits "00"–"99", got "${options.pluginIndex}"`);
    }
    // At construction rather than at Configure: handlers that subscribe to nothing are a bug, not a retry.
    subscriptionMask(handlers);
  }

  get connected(): boolean {
    return this.session !== undefined;
  }

  /** Starts the connect/register/reconnect loop; resolves once, at the first successful registration. */
  start(): Promise<void> {
    const first = new Promise<void>((resolve) => this.once("registered", () => resolve()));
    this.loop ??= this.run();
    return first;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    this.session?.close();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { log } = this.options;
    const initial = this.options.retryInitialMs ?? 100;
    const max = this.options.retryMaxMs ?? 1000;
    let wait = initial;
    let lastError = "";
    while (!this.stopping) {
      try {
        const session = await openSession(this.handlers, {
          socketPath: this.options.socketPath,
          pluginName: this.options.pluginName,
          pluginIndex: this.options.pluginIndex,
          registrationTimeoutMs: this.options.registrationTimeoutMs ?? 5000,
          log,
          signal: this.abort.signal,
        });
        this.session = session;
        wait = initial;
        lastError = "";
        log.info({ runtime: session.runtime, socket: this.options.socketPath }, "registered with runtime");
        this.emit("registered", session.runtime);
        const reason = await session.closed;
        this.session = undefined;
        if (this.stopping) break;
        const why = reason ? reason.message : "connection closed";
        log.warn({ reason: why }, "runtime connection lost; reconnecting");
        this.emit("disconnected", why);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        // A node without containerd would log the same line every second: say it once until it changes.
        if (message !== lastError)
          log.warn({ err: message, retryMs: wait }, "NRI registration failed; retrying");
        lastError = message;
      }
      if (this.stopping) break;
      await delay(wait, this.abort.signal).catch(() => undefined);
      wait = Math.min(max, wait * 2);
    }
  }
}
