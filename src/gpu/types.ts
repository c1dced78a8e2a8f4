/** CUprocessState from CUDA 13's cuda.h. */
export const ProcessState = { RUNNING: 0, LOCKED: 1, CHECKPOINTED: 2, FAILED: 3 } as const;
export type ProcessState = (typeof ProcessState)[keyof typeof ProcessState];

const stateNames = ["RUNNING", "LOCKED", "CHECKPOINTED", "FAILED"] as const;
export type StateName = (typeof stateNames)[number];

export function stateName(s: ProcessState): StateName {
  return stateNames[s] ?? "FAILED";
}

export function parseStateName(text: string): ProcessState | undefined {
  const i = stateNames.indexOf(text.trim().toUpperCase() as StateName);
  return i < 0 ? undefined : (i as ProcessState);
}

export type GpuOp = "getState" | "lock" | "checkpoint" | "restore" | "unlock" | "getRestoreThreadId";

/**
 * code: the CUDA error name (e.g. CUDA_ERROR_ILLEGAL_STATE) when the driver answered; DEADLINE_EXCEEDED when
 * kybernate stopped waiting; BACKEND_FAILURE when the backend itself failed (tool missing, output unreadable);
 * PROCESS_STOPPED / PROCESS_TRACED when kybernate did not ask the driver about a stopped or traced process;
 * DRIVER_CALLS_STUCK when too many earlier calls are still stuck in the driver to make another.
 */
export type GpuErrorCode = string;

export interface GpuErrorInit {
  pid: number;
  op: GpuOp;
  code: GpuErrorCode;
  driverMessage: string;
  result?: number;
  state?: ProcessState;
  hint?: string;
}

export class GpuError extends Error {
  readonly pid: number;
  readonly op: GpuOp;
  readonly code: GpuErrorCode;
  readonly driverMessage: string;
  /** The numeric CUresult, when the driver gave one. */
  readonly result: number | undefined;
  /** The process's state when the error was seen, when known. */
  state: ProcessState | undefined;

  constructor(init: GpuErrorInit) {
    const hint = init.hint ?? hintFor(init);
    super(
      `GPU ${init.op} of pid ${init.pid} failed: ${init.driverMessage} (${init.code})${hint ? `; ${hint}` : ""}`,
    );
    this.name = "GpuError";
    this.pid = init.pid;
    this.op = init.op;
    this.code = init.code;
    this.driverMessage = init.driverMessage;
    this.result = init.result;
    this.state = init.state;
  }

  toJSON(): Record<string, unknown> {
    return {
      pid: this.pid,
      op: this.op,
      code: this.code,
      result: this.result,
      state: this.state === undefined ? undefined : stateName(this.state),
      driverMessage: this.driverMessage,
      message: this.message,
    };
  }
}

function hintFor(init: GpuErrorInit): string {
  switch (init.code) {
    case "CUDA_ERROR_NOT_INITIALIZED":
      return `pid ${init.pid} has no CUDA context (not a CUDA process, or CUDA not initialised yet)`;
    case "CUDA_ERROR_OPERATING_SYSTEM":
      return `pid ${init.pid} does not exist (or the driver cannot reach it: run as root in the host pid namespace)`;
    case "CUDA_ERROR_ILLEGAL_STATE":
      return "the process is in the wrong state for this step: check it with `kybernate gpu state`";
    case "CUDA_ERROR_NOT_READY":
      return "the lock timed out: the process did not reach a CUDA API boundary in time (is it frozen or stopped?)";
    case "DEADLINE_EXCEEDED":
      return "the driver call did not return in time; the process may be stuck in this step";
    default:
      return "";
  }
}

/** Old UUID → new UUID, as `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` strings (nvidia-smi -L). */
export type DeviceMap = ReadonlyArray<{ from: string; to: string }>;

/** Parses `old=new,old=new` (cuda-checkpoint's --device-map syntax). */
export function parseDeviceMap(text: string): DeviceMap {
  if (!text.trim()) return [];
  return text.split(",").map((pair) => {
    const [from, to, extra] = pair.split("=").map((s) => s.trim());
    if (!from || !to || extra !== undefined)
      throw new Error(
        `bad device map entry "${pair}": expected OLD_UUID=NEW_UUID, e.g. GPU-1234...=GPU-abcd...`,
      );
    return { from, to };
  });
}

export function formatDeviceMap(map: DeviceMap): string {
  return map.map((p) => `${p.from}=${p.to}`).join(",");
}

/** 16 bytes of a GPU UUID string ("GPU-" prefix optional). */
export function uuidBytes(uuid: string): number[] {
  const hex = uuid.replace(/^(GPU|MIG)-/i, "").replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex))
    throw new Error(
      `bad GPU UUID "${uuid}": expected GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (nvidia-smi -L)`,
    );
  return Array.from({ length: 16 }, (_, i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16));
}
