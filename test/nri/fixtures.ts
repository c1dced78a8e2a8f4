// Shared pieces of the NRI stub tests: NRI objects as containerd sends them, a stub wired to a fake
// runtime, and a logger whose lines a test can read.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { Deadline } from "../../src/base/deadline.js";
import type { Logger } from "../../src/base/log.js";
import type { NriContext, NriHandlers } from "../../src/nri/handlers.js";
import { NriStub, type StubOptions } from "../../src/nri/stub.js";
import { type Container, ContainerState, type PodSandbox } from "../../src/nri/types.js";
import type { CriuConfigOptions } from "../../src/plugin/criu-config.js";
import { kybernateHandlers } from "../../src/plugin/kybernate-plugin.js";
import { parseSelector } from "../../src/plugin/selector.js";
import type { FakeRuntime } from "./fake-nri-runtime.js";

export function pod(id: string, extra: Partial<PodSandbox> = {}): PodSandbox {
  return {
    id,
    name: `pod-${id}`,
    uid: `uid-${id}`,
    namespace: "default",
    labels: {},
    annotations: {},
    runtimeHandler: "",
    pid: 0,
    ips: [],
    ...extra,
  };
}

export function container(id: string, podSandboxId: string, extra: Partial<Container> = {}): Container {
  return {
    id,
    podSandboxId,
    name: `ctr-${id}`,
    state: ContainerState.Created,
    labels: {},
    annotations: {},
    args: ["sleep", "3600"],
    env: [],
    mounts: [],
    pid: 0,
    CDIDevices: [],
    ...extra,
  };
}

/** A handler's context for calling handlers directly, as the stub would with a runtime's `ms` deadline. */
export function callContext(ms = 2000): NriContext {
  const deadline = Deadline.after(ms, { what: "the test's call" });
  return { deadline, signal: deadline.signal };
}

export interface LogCapture {
  log: Logger;
  /** Parsed JSON lines written so far. */
  lines: Record<string, unknown>[];
}

export function captureLog(): LogCapture {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

/** A stub dialing `runtime`, with a fast backoff unless the test sets its own. */
export function stubFor(
  runtime: FakeRuntime,
  handlers: NriHandlers,
  options: Partial<StubOptions> = {},
): NriStub {
  return new NriStub(handlers, {
    socketPath: runtime.socketPath,
    pluginName: "kybernate",
    pluginIndex: "10",
    log: options.log ?? captureLog().log,
    retryInitialMs: 20,
    retryMaxMs: 200,
    ...options,
  });
}

/** Rejects with a message naming `what` when `promise` takes longer than `ms`: no test may hang. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The CRIU options of a plugin under test: files under `stateDir`, a hook and daemon that do not exist. */
export function testCriuOptions(stateDir: string): CriuConfigOptions {
  return {
    stateDir,
    hookPath: "/nonexistent/kybernate-criu-hook",
    node: process.execPath,
    daemonSocket: join(stateDir, "daemon.sock"),
    networkLock: "",
    timeoutS: 10,
    hookTimeoutMs: 95_000,
  };
}

/** kybernate's own handlers with `selector`, writing their per-container CRIU files under a temp dir. */
export function kybernateFor(
  selector: string,
  log: Logger,
): { handlers: NriHandlers; stateDir: string; cleanup(): void } {
  const stateDir = mkdtempSync(join(tmpdir(), "kybernate-nri-state-"));
  const handlers = kybernateHandlers({
    criu: testCriuOptions(stateDir),
    selector: parseSelector(selector),
    log,
  });
  return { handlers, stateDir, cleanup: () => rmSync(stateDir, { recursive: true, force: true }) };
}
