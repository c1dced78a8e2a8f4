// The only timer helper of kybernate: an absolute deadline with the AbortSignal that fires when it passes,
// so one deadline can travel from a caller (the hook's request, an NRI call) down to every call it makes.

/** Node's timers hold at most 2^31-1 ms (about 24.8 days); a longer delay fires at once, with a warning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A delay a Node timer can hold: NaN and negatives become 0, anything longer than MAX_TIMER_MS is capped. */
export function timerDelay(ms: number): number {
  if (!(ms > 0)) return 0;
  return Math.min(Math.ceil(ms), MAX_TIMER_MS);
}

/** The reason a Deadline's signal carries when it passes. */
export class DeadlineExceeded extends Error {
  override readonly name = "DeadlineExceeded";
}

export interface DeadlineOptions {
  /** Aborting it aborts the deadline too (a caller's signal, a parent deadline's). */
  parent?: AbortSignal;
  /** What is being timed, for the error: "<what> did not finish within N ms". */
  what?: string;
}

/**
 * A point in time (epoch ms; Infinity for never) and a signal that aborts when it passes or when its parent
 * aborts. The timer behind it keeps the process alive only while a race() waits on it; `dispose()` stops it.
 */
export class Deadline {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  /** Races waiting on this deadline: while there are any, its timer keeps the event loop alive. */
  private waiters = 0;
  private readonly onParentAbort?: () => void;

  private constructor(
    readonly at: number,
    private readonly options: DeadlineOptions & { ms: number },
  ) {
    this.signal = this.controller.signal;
    const { parent } = options;
    if (parent?.aborted) this.controller.abort(parent.reason);
    else {
      if (parent) {
        this.onParentAbort = () => this.abort(parent.reason);
        parent.addEventListener("abort", this.onParentAbort, { once: true });
      }
      this.arm();
    }
  }

  /** `ms` from now; Infinity, NaN-free large values and huge numbers are fine (no timer overflow). */
  static after(ms: number, options: DeadlineOptions = {}): Deadline {
    const span = Number.isNaN(ms) ? 0 : Math.max(0, ms);
    return new Deadline(Date.now() + span, { ...options, ms: span });
  }

  /** At an absolute time (epoch ms). */
  static at(epochMs: number, options: DeadlineOptions = {}): Deadline {
    return new Deadline(epochMs, { ...options, ms: Math.max(0, epochMs - Date.now()) });
  }

  static never(options: DeadlineOptions = {}): Deadline {
    return new Deadline(Number.POSITIVE_INFINITY, { ...options, ms: Number.POSITIVE_INFINITY });
  }

  /** The span it was made with (`after(ms)`), or from its making to its time (`at`). */
  get budgetMs(): number {
    return this.options.ms;
  }

  /** Milliseconds left (0 once passed; Infinity for never). */
  remaining(now = Date.now()): number {
    return Math.max(0, this.at - now);
  }

  /** Passed (by the clock, even before its timer has run) or aborted by its parent. */
  get expired(): boolean {
    return this.signal.aborted || Date.now() >= this.at;
  }

  /** A deadline no later than this one: `ms` from now, or this one's time when that comes first. */
  child(ms = Number.POSITIVE_INFINITY, what = this.options.what): Deadline {
    const at = Math.min(this.at, Date.now() + Math.max(0, ms));
    return Deadline.at(at, { parent: this.signal, ...(what ? { what } : {}) });
  }

  /**
   * `work`'s result, or a rejection with `onExpire()` (default: this deadline's reason) once the deadline passes
   * first. The work itself is not stopped, only abandoned: its late rejection is swallowed.
   */
  race<T>(work: Promise<T>, onExpire?: () => Error): Promise<T> {
    work.catch(() => undefined);
    if (this.signal.aborted) return Promise.reject(onExpire?.() ?? this.signal.reason);
    this.waiters++;
    this.timer?.ref();
    return new Promise<T>((resolve, reject) => {
      const settle = () => {
        this.signal.removeEventListener("abort", expire);
        if (--this.waiters === 0) this.timer?.unref();
      };
      const expire = () => {
        settle();
        reject(onExpire?.() ?? this.signal.reason);
      };
      this.signal.addEventListener("abort", expire, { once: true });
      work.then(
        (value) => {
          settle();
          resolve(value);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
  }

  /** Stops the timer and detaches from the parent; the signal stays as it is. */
  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.onParentAbort) this.options.parent?.removeEventListener("abort", this.onParentAbort);
  }

  private arm(): void {
    const left = this.remaining();
    if (left === Number.POSITIVE_INFINITY) return;
    if (left <= 0) {
      this.expire();
      return;
    }
    // A deadline beyond a timer's range re-arms when the capped timer fires.
    this.timer = setTimeout(() => (this.remaining() > 0 ? this.arm() : this.expire()), timerDelay(left));
    if (this.waiters === 0) this.timer.unref();
  }

  private expire(): void {
    const what = this.options.what ?? "the operation";
    this.abort(new DeadlineExceeded(`${what} did not finish within ${Math.round(this.options.ms)} ms`));
  }

  private abort(reason: unknown): void {
    this.dispose();
    if (!this.signal.aborted) this.controller.abort(reason);
  }
}

/** Waits `ms` (capped like every timer), or rejects with the signal's reason once it aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, timerDelay(ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
