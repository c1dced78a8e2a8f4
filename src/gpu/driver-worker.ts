// One of kybernate's driver threads (driver-pool.ts): it makes one blocking cuCheckpointProcess* call at a
// time, synchronously, so a call the driver never returns pins this thread and no other.
import { parentPort, workerData } from "node:worker_threads";
import koffi from "koffi";
import type { DriverCall, DriverReply } from "./driver-pool.js";

const CUuuid = koffi.struct("kyb_CUuuid", { bytes: koffi.array("uint8_t", 16, "Array") });
const GpuPair = koffi.struct("kyb_CUcheckpointGpuPair", { oldUuid: CUuuid, newUuid: CUuuid });
const LockArgs = koffi.struct("kyb_CUcheckpointLockArgs", {
  timeoutMs: "uint32_t",
  reserved0: "uint32_t",
  reserved1: koffi.array("uint64_t", 7),
});
const RestoreArgs = koffi.struct("kyb_CUcheckpointRestoreArgs", {
  gpuPairs: koffi.pointer(GpuPair),
  gpuPairsCount: "uint32_t",
  reserved: koffi.array("uint8_t", 52 - 8),
  reserved1: "uint64_t",
});

type Fn = (...args: unknown[]) => number;

const { libraryPath } = workerData as { libraryPath: string };
// The main thread loaded this library (and ran cuInit) already: here dlopen only takes another reference.
const lib = koffi.load(libraryPath);
const fn: Record<DriverCall["op"], Fn> = {
  getState: lib.func("int cuCheckpointProcessGetState(int pid, _Out_ int *state)"),
  getRestoreThreadId: lib.func("int cuCheckpointProcessGetRestoreThreadId(int pid, _Out_ int *tid)"),
  lock: lib.func("cuCheckpointProcessLock", "int", ["int", koffi.pointer(LockArgs)]),
  checkpoint: lib.func("int cuCheckpointProcessCheckpoint(int pid, void *args)"),
  restore: lib.func("cuCheckpointProcessRestore", "int", ["int", koffi.pointer(RestoreArgs)]),
  unlock: lib.func("int cuCheckpointProcessUnlock(int pid, void *args)"),
};

function run(call: DriverCall): DriverReply {
  try {
    const out = [0];
    const f = fn[call.op];
    switch (call.op) {
      case "getState":
      case "getRestoreThreadId":
        return { rc: f(call.pid, out), value: out[0] ?? 0 };
      case "lock":
        return {
          rc: f(call.pid, {
            timeoutMs: call.lockTimeoutMs ?? 0,
            reserved0: 0,
            reserved1: [0, 0, 0, 0, 0, 0, 0],
          }),
        };
      case "restore": {
        if (!call.pairs?.length) return { rc: f(call.pid, null) };
        const args = {
          gpuPairs: call.pairs.map((p) => ({ oldUuid: { bytes: p.from }, newUuid: { bytes: p.to } })),
          gpuPairsCount: call.pairs.length,
          reserved: new Array(44).fill(0),
          reserved1: 0,
        };
        return { rc: f(call.pid, args) };
      }
      default:
        return { rc: f(call.pid, null) };
    }
  } catch (err) {
    return { error: (err as Error).message };
  }
}

parentPort?.on("message", (call: DriverCall) => parentPort?.postMessage(run(call)));
