/** setTimeout fires at once for delays above this (2^31-1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Runs `onExpire` after `ms` milliseconds; returns a cancel function. Delays too long for a Node timer
 * never expire, which is what a deadline weeks away means in practice.
 */
export function startDeadline(ms: number, onExpire: () => void): () => void {
  if (!Number.isFinite(ms) || ms > MAX_TIMER_MS) return () => {};
  const timer = setTimeout(onExpire, Math.max(0, ms));
  return () => clearTimeout(timer);
}
