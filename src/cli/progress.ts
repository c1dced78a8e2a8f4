/** Where progress goes: process.stderr, or a stand-in in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** How long a step may run before a terminal shows a ticking line (ms). */
  quietMs?: number;
  tickMs?: number;
  /** What a terminal's ticking line adds after the time (e.g. "4.1 of 16.0 GiB"), asked at each tick. */
  detail?: () => string;
}

export const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/**
 * Runs one slow step with progress on stderr. On a terminal: nothing for the first second, then
 * "label… N s" rewritten each second and replaced by the outcome. Elsewhere (logs, pipes) a ticking line
 * would be noise: one line when the step starts and one when it ends.
 */
export async function withProgress<T>(
  label: string,
  step: () => Promise<T>,
  opts: ProgressOptions = {},
): Promise<T> {
  const stream = opts.stream ?? process.stderr;
  const tty = !!stream.isTTY;
  const started = Date.now();
  let shown = false;
  let timer: NodeJS.Timeout | undefined;
  const draw = () => {
    shown = true;
    const detail = opts.detail?.();
    stream.write(
      `\r\x1b[2K${label}… ${Math.floor((Date.now() - started) / 1000)} s${detail ? ` (${detail})` : ""}`,
    );
  };
  if (tty) {
    timer = setTimeout(function tick() {
      draw();
      timer = setTimeout(tick, opts.tickMs ?? 1000);
    }, opts.quietMs ?? 1000);
  } else {
    stream.write(`${label}…\n`);
  }
  const end = (outcome: string) => {
    clearTimeout(timer);
    const line = `${label}: ${outcome} after ${seconds(Date.now() - started)}`;
    if (!tty) stream.write(`${line}\n`);
    else if (shown) stream.write(`\r\x1b[2K${line}\n`);
  };
  try {
    const result = await step();
    end("done");
    return result;
  } catch (err) {
    end("failed");
    throw err;
  }
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(1)} ${units[u]}`;
}

/**
 * Progress of a step that moves bytes: on a terminal, "label… 3.2 GiB of 16.0 GiB (20 %), 1.1 GiB/s" at most
 * twice a second; elsewhere one line at the start and one at the end, as withProgress.
 */
export async function withByteProgress<T>(
  label: string,
  step: (update: (done: number, total: number) => void) => Promise<T>,
  opts: ProgressOptions = {},
): Promise<T> {
  const stream = opts.stream ?? process.stderr;
  const tty = !!stream.isTTY;
  const started = Date.now();
  let last = 0;
  let shown = false;
  const update = (done: number, total: number) => {
    if (!tty) return;
    const now = Date.now();
    if (now - last < (opts.tickMs ?? 500) && done < total) return;
    last = now;
    shown = true;
    const rate = done / Math.max((now - started) / 1000, 0.001);
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    stream.write(
      `\r\x1b[2K${label}… ${humanBytes(done)} of ${humanBytes(total)} (${pct} %), ${humanBytes(rate)}/s`,
    );
  };
  if (!tty) stream.write(`${label}…\n`);
  const end = (outcome: string) => {
    const line = `${label}: ${outcome} after ${seconds(Date.now() - started)}`;
    if (!tty) stream.write(`${line}\n`);
    else stream.write(`${shown ? "\r\x1b[2K" : ""}${line}\n`);
  };
  try {
    const result = await step(update);
    end("done");
    return result;
  } catch (err) {
    end("failed");
    throw err;
  }
}
