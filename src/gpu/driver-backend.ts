import koffi, { type LibraryHandle } from "koffi";
import { type CallOptions, callDeadline, type GpuBackend, withinDeadline } from "./backend.js";
import { type DeviceMap, GpuError, type GpuOp, type ProcessState, uuidBytes } from "./types.js";

// koffi's async calls run on libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE is set before the pool
// first starts). A set of N processes needs N threads to run truly in parallel, and a hung driver call keeps
// its thread; a bigger pool keeps both from starving file I/O. Too late (harmless) if the pool already ran.
process.env.UV_THREADPOOL_SIZE ??= "32";

/** Where libcuda.so.1 is looked for when no path is given: the loader's search, then common driver dirs. */
export const libcudaCandidates = [
  "libcuda.so.1",
  "/usr/local/nvidia/lib64/libcuda.so.1",
  "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
  "/usr/lib64/libcuda.so.1",
];

const loaded = new Set<LibraryHandle>();

type AsyncFn = { async: (...args: unknown[]) => void };

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

/**
 * The driver API directly: libcuda.so.1's cuCheckpointProcess* (r570+), loaded with koffi. Blocking calls go
 * through koffi's async path (a worker thread), each raced against its deadline.
 */
export class DriverBackend implements GpuBackend {
  readonly kind = "driver" as const;
  readonly description: string;
  readonly libraryPath: string;
  readonly driverVersion: number;
  private readonly fn: Record<"getState" | "lock" | "checkpoint" | "restore" | "unlock" | "tid", AsyncFn>;
  private readonly errorString: (code: number, out: (string | null)[]) => number;
  private readonly errorName: (code: number, out: (string | null)[]) => number;

  /** Throws an Error that says what to fix when the library cannot be loaded or is too old. */
  constructor(libraryPath?: string) {
    const tried: string[] = [];
    let lib: LibraryHandle | undefined;
    let path = "";
    for (const candidate of libraryPath ? [libraryPath] : libcudaCandidates) {
      try {
        lib = koffi.load(candidate);
        path = candidate;
        break;
      } catch (err) {
        tried.push(`${candidate}: ${(err as Error).message}`);
      }
    }
    if (!lib)
      throw new Error(
        `cannot load the NVIDIA driver library (${tried.join("; ")}); give its path with --libcuda PATH or ` +
          "KYBERNATE_LIBCUDA, or use --gpu-backend binary with --cuda-checkpoint PATH",
      );
    // Never unloaded: a call cut by its deadline may still be running inside the library.
    loaded.add(lib);
    this.libraryPath = path;
    try {
      const cuInit = lib.func("int cuInit(unsigned int flags)");
      const cuDriverGetVersion = lib.func("int cuDriverGetVersion(_Out_ int *version)");
      this.errorString = lib.func("int cuGetErrorString(int error, _Out_ const char **str)");
      this.errorName = lib.func("int cuGetErrorName(int error, _Out_ const char **str)");
      this.fn = {
        getState: lib.func("int cuCheckpointProcessGetState(int pid, _Out_ int *state)"),
        tid: lib.func("int cuCheckpointProcessGetRestoreThreadId(int pid, _Out_ int *tid)"),
        lock: lib.func("cuCheckpointProcessLock", "int", ["int", koffi.pointer(LockArgs)]),
        checkpoint: lib.func("int cuCheckpointProcessCheckpoint(int pid, void *args)"),
        restore: lib.func("cuCheckpointProcessRestore", "int", ["int", koffi.pointer(RestoreArgs)]),
        unlock: lib.func("int cuCheckpointProcessUnlock(int pid, void *args)"),
      };
      const rc = cuInit(0) as number;
      if (rc !== 0) {
        loaded.delete(lib);
        lib.unload();
        throw new Error(`cuInit failed: ${this.describe(rc)} (is the NVIDIA driver loaded, a GPU visible?)`);
      }
      const version = [0];
      cuDriverGetVersion(version);
      this.driverVersion = version[0] ?? 0;
    } catch (err) {
      const msg = (err as Error).message;
      throw new Error(
        /cannot find function/i.test(msg)
          ? `${path} lacks the checkpoint API (${msg}): the driver must be r570 or newer`
          : `${path}: ${msg}`,
      );
    }
    this.description = `libcuda ${path} (CUDA driver API ${this.driverVersion})`;
  }

  /** "the operation cannot be performed in the present state" style text plus its name. */
  private describe(code: number): string {
    const name: (string | null)[] = [null];
    const text: (string | null)[] = [null];
    this.errorName(code, name);
    this.errorString(code, text);
    return `${text[0] ?? `CUresult ${code}`} [${name[0] ?? code}]`;
  }

  private errorFor(pid: number, op: GpuOp, code: number): GpuError {
    const name: (string | null)[] = [null];
    const text: (string | null)[] = [null];
    this.errorName(code, name);
    this.errorString(code, text);
    return new GpuError({
      pid,
      op,
      code: name[0] ?? `CUresult ${code}`,
      result: code,
      driverMessage: text[0] ?? `unknown CUresult ${code}`,
    });
  }

  private call(pid: number, op: GpuOp, fn: AsyncFn, args: unknown[], opts?: CallOptions): Promise<void> {
    const deadline = callDeadline(op, opts);
    const p = new Promise<void>((resolve, reject) => {
      fn.async(...args, (err: Error | null, rc: number) => {
        if (err)
          reject(new GpuError({ pid, op, code: "BACKEND_FAILURE", driverMessage: `koffi: ${err.message}` }));
        else if (rc !== 0) reject(this.errorFor(pid, op, rc));
        else resolve();
      });
    });
    return withinDeadline(pid, op, deadline, p);
  }

  async getState(pid: number, opts?: CallOptions): Promise<ProcessState> {
    const out = [0];
    await this.call(pid, "getState", this.fn.getState, [pid, out], opts);
    return out[0] as ProcessState;
  }

  lock(pid: number, timeoutMs: number, opts?: CallOptions): Promise<void> {
    const args = { timeoutMs, reserved0: 0, reserved1: [0, 0, 0, 0, 0, 0, 0] };
    return this.call(pid, "lock", this.fn.lock, [pid, args], opts);
  }

  checkpoint(pid: number, opts?: CallOptions): Promise<void> {
    return this.call(pid, "checkpoint", this.fn.checkpoint, [pid, null], opts);
  }

  restore(pid: number, deviceMap?: DeviceMap, opts?: CallOptions): Promise<void> {
    if (!deviceMap?.length) return this.call(pid, "restore", this.fn.restore, [pid, null], opts);
    const pairs = deviceMap.map((p) => ({
      oldUuid: { bytes: uuidBytes(p.from) },
      newUuid: { bytes: uuidBytes(p.to) },
    }));
    const args = {
      gpuPairs: pairs,
      gpuPairsCount: pairs.length,
      reserved: new Array(44).fill(0),
      reserved1: 0,
    };
    return this.call(pid, "restore", this.fn.restore, [pid, args], opts);
  }

  unlock(pid: number, opts?: CallOptions): Promise<void> {
    return this.call(pid, "unlock", this.fn.unlock, [pid, null], opts);
  }

  async getRestoreThreadId(pid: number, opts?: CallOptions): Promise<number> {
    const out = [0];
    await this.call(pid, "getRestoreThreadId", this.fn.tid, [pid, out], opts);
    return out[0] ?? 0;
  }

  close(): void {
    // Nothing to release: the library stays loaded (see `loaded`).
  }
}
