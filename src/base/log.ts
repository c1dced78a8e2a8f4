import { type LevelWithSilent, type Logger, pino } from "pino";

export type { Logger };

/** One JSON logger per process; components take a child with their own `component` field. */
export function createLogger(level: LevelWithSilent = "info", destination = 2): Logger {
  return pino(
    { name: "kybernate", level, base: { pid: process.pid } },
    pino.destination({ fd: destination, sync: true }),
  );
}

/** For libraries and tests that must not print. */
export const silentLogger: Logger = pino({ level: "silent" });
