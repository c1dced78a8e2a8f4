import { GpuError, type GpuOp } from "./types.js";

/**
 * Races a call against its deadline. The call itself cannot be cancelled (a driver call blocks a thread),
 * so on expiry the caller gets a DEADLINE_EXCEEDED GpuError and the late result is dropped.
 */
export function withDeadline<T>(pid: number, op: GpuOp, deadlineMs: number, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expiry = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new GpuError({
            pid,
            op,
            code: "DEADLINE_EXCEEDED",
            driverMessage: `no answer from the driver within ${deadlineMs} ms`,
          }),
        ),
      deadlineMs,
    );
  });
  // A late rejection of the abandoned call must not become an unhandled rejection.
  call.catch(() => {});
  return Promise.race([call, expiry]).finally(() => clearTimeout(timer));
}
