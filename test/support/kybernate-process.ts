import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { NODE_FLAGS } from "../../src/base/node-flags.js";
import { packageRoot } from "../../src/base/paths.js";

export interface KybernateProcess {
  child: ChildProcess;
  socket: string;
  stateDir: string;
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>;
  /** The first log line (from index `since` on) that matches. */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    options?: { timeoutMs?: number; since?: number },
  ): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** `kybernate run` as a node would run it, as a child process with its own socket and state directory. */
export async function startKybernate(options: {
  nriSocket: string;
  /** The executable and its leading arguments; default: this checkout's build under this node. */
  command?: string[];
  args?: string[];
  stateDir?: string;
  socket?: string;
  env?: NodeJS.ProcessEnv;
  /** How long it may take to register with the runtime. */
  startTimeoutMs?: number;
}): Promise<KybernateProcess> {
  const stateDir = options.stateDir ?? mkdtempSync("/tmp/kyb-state-");
  const socket = options.socket ?? join(stateDir, "run", "daemon.sock");
  const [executable = process.execPath, ...leading] = options.command ?? [
    process.execPath,
    ...NODE_FLAGS,
    join(packageRoot, "dist/src/cli/main.js"),
  ];
  const child = spawn(
    executable,
    [
      ...leading,
      "run",
      "--nri-socket",
      options.nriSocket,
      "--socket",
      socket,
      "--state-dir",
      stateDir,
      "--log-level",
      "debug",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...options.env } },
  );
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let buffered = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
      newline = buffered.indexOf("\n");
    }
    for (const wake of waiters) wake();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // "close" comes after the last stderr chunk: a waiter woken by it has seen every line there will be.
  let closed = false;
  child.once("close", () => {
    closed = true;
    for (const wake of waiters) wake();
  });
  const proc: KybernateProcess = {
    child,
    socket,
    stateDir,
    logs,
    waitForLog(match, { timeoutMs = 10_000, since = 0 } = {}) {
      return new Promise((resolve, reject) => {
        const lastLines = () =>
          logs
            .slice(-8)
            .map((l) => JSON.stringify(l))
            .join("\n");
        const check = () => {
          const found = logs.slice(since).find(match);
          if (found || closed) {
            clearTimeout(timer);
            waiters.delete(check);
          }
          if (found) resolve(found);
          else if (closed)
            reject(
              new Error(
                `kybernate exited (${child.exitCode ?? child.signalCode}) before logging the expected line; last lines:\n${lastLines()}`,
              ),
            );
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(
            new Error(
              `kybernate did not log the expected line within ${timeoutMs} ms; last lines:\n${lastLines()}`,
            ),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    /** Stops it with `signal`; one that has not exited 15 s later is killed, and that is an error. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const late = setTimeout(() => child.kill("SIGKILL"), 15_000);
      try {
        await exited;
      } finally {
        clearTimeout(late);
      }
      if (child.signalCode === "SIGKILL" && signal !== "SIGKILL")
        throw new Error(`kybernate run did not exit within 15 s of ${signal}: killed`);
    },
  };
  await proc.waitForLog((l) => l.msg === "registered with runtime", {
    timeoutMs: options.startTimeoutMs ?? 10_000,
  });
  return proc;
}
