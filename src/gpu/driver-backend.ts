import koffi, { type LibraryHandle } from "koffi";
import { type CallOptions, callDeadline, type GpuBackend, withinDeadline } from "./backend.js";
import { type DriverCall, DriverCallPool, type DriverPoolOptions } from "./driver-pool.js";
import { type DeviceMap, GpuError, type GpuOp, type ProcessState, uuidBytes } from "./types.js";

/** Where libcuda.so.1 is looked for when no path is given: the loader's search, then common driver dirs. */
export const libcudaCandidates = [
  "libcuda.so.1",
  "/usr/local/nvidia/lib64/libcuda.so.1",
  "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
  "/usr/lib64/libcuda.so.1",
];

const loaded = new Set<LibraryHandle>();

/** Sizes of the driver threads (driver-pool.ts). */
export type DriverBackendOptions = Pick<DriverPoolOptions, "maxThreads" | "maxStuck">;

/**
 * The driver API directly: libcuda.so.1's cuCheckpointProcess* (r570+), loaded with koffi. The blocking calls
 * run on kybernate's own driver threads (driver-pool.ts), each raced against its deadline; the quick ones
 * (cuInit, error texts) here.
 */
export class DriverBackend implements GpuBackend {
  readonly kind = "driver" as const;
  readonly description: string;
  readonly libraryPath: string;
  readonly driverVersion: number;
  private readonly pool: DriverCallPool;
  private readonly errorString: (code: number, out: (string | null)[]) => number;
  private readonly errorName: (code: number, out: (string | null)[]) => number;

  /** Throws an Error that says what to fix when the library cannot be loaded or is too old. */
  constructor(libraryPath?: string, options: DriverBackendOptions = {}) {
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
      // Declared here so that a library without the checkpoint API is refused now, not at the first call.
      for (const name of [
        "cuCheckpointProcessGetState",
        "cuCheckpointProcessGetRestoreThreadId",
        "cuCheckpointProcessLock",
        "cuCheckpointProcessCheckpoint",
        "cuCheckpointProcessRestore",
        "cuCheckpointProcessUnlock",
      ])
        lib.func(name, "int", ["int", "void *"]);
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
    this.pool = new DriverCallPool({ libraryPath: path, ...options });
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

  private async call(call: DriverCall, opts?: CallOptions): Promise<number> {
    const { pid, op } = call;
    const deadline = callDeadline(op, opts);
    const reply = this.pool.run(call, deadline.signal).then((r) => {
      if ("error" in r)
        throw new GpuError({ pid, op, code: "BACKEND_FAILURE", driverMessage: `koffi: ${r.error}` });
      if (r.rc !== 0) throw this.errorFor(pid, op, r.rc);
      return r.value ?? 0;
    });
    return withinDeadline(pid, op, deadline, reply);
  }

  async getState(pid: number, opts?: CallOptions): Promise<ProcessState> {
    return (await this.call({ op: "getState", pid }, opts)) as ProcessState;
  }

  async lock(pid: number, timeoutMs: number, opts?: CallOptions): Promise<void> {
    await this.call({ op: "lock", pid, lockTimeoutMs: timeoutMs }, opts);
  }

  async checkpoint(pid: number, opts?: CallOptions): Promise<void> {
    await this.call({ op: "checkpoint", pid }, opts);
  }

  async restore(pid: number, deviceMap?: DeviceMap, opts?: CallOptions): Promise<void> {
    const pairs = deviceMap?.map((p) => ({ from: uuidBytes(p.from), to: uuidBytes(p.to) }));
    await this.call({ op: "restore", pid, ...(pairs?.length ? { pairs } : {}) }, opts);
  }

  async unlock(pid: number, opts?: CallOptions): Promise<void> {
    await this.call({ op: "unlock", pid }, opts);
  }

  getRestoreThreadId(pid: number, opts?: CallOptions): Promise<number> {
    return this.call({ op: "getRestoreThreadId", pid }, opts);
  }

  /** Driver threads busy, idle and stuck (for logs and tests). */
  get threads(): DriverCallPool["stats"] {
    return this.pool.stats;
  }

  /** Ends the idle driver threads; the library stays loaded (see `loaded`). */
  close(): void {
    this.pool.close();
  }
}
