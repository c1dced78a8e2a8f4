// What CRIU cannot dump, seen before CRIU is let loose. CRIU 4.2 has no io_uring support: its dump stops on the
// ring's mapping ("Unknown shit 600 (anon_inode:[io_uring])", seen on the H200 with a PyTorch job, docs/BENCHMARKS.md)
// and containerd reports only "criu failed". The container's other processes are looked at before the GPU freeze
// (it does not change them); its CUDA processes after it, since the freeze takes their GPU mappings away (the GPU
// double stands in for those with exactly such a ring).
import { fdTargets, PROC_ROOT, readComm, readMaps } from "../host/proc.js";

/** What the rule needs of one process of the container. */
export interface DumpFacts {
  pid: number;
  comm: string;
  /** Its fd targets and mappings naming an io_uring instance. */
  ioUring: boolean;
}

const IO_URING = "anon_inode:[io_uring]";

/** Why CRIU cannot dump these processes, or undefined when nothing known stops it. */
export function criuRefusal(
  processes: readonly DumpFacts[],
  when: "before the freeze" | "after the freeze",
): string | undefined {
  const users = processes.filter((p) => p.ioUring);
  if (users.length === 0) return undefined;
  const who = users.map((p) => `${p.pid} (${p.comm})`).join(", ");
  return `refusing to checkpoint: process${users.length > 1 ? "es" : ""} ${who} use${users.length > 1 ? "" : "s"} io_uring (${IO_URING}), which CRIU cannot dump${when === "before the freeze" ? "; nothing was frozen" : " even with the GPU state moved out; the GPU state was put back"}: run the workload with io_uring off (its library's setting, or the kernel's io_uring_disabled sysctl) to checkpoint it`;
}

/** The facts of each process, read from the host's /proc (fds and mappings: a ring may be held either way). */
export async function readDumpFacts(pids: readonly number[], root = PROC_ROOT): Promise<DumpFacts[]> {
  return Promise.all(
    pids.map(async (pid) => {
      const [comm, targets, maps] = await Promise.all([
        readComm(pid, root).then(
          (c) => c || "?",
          () => "?",
        ),
        fdTargets(pid, root),
        readMaps(pid, root),
      ]);
      return { pid, comm, ioUring: targets.includes(IO_URING) || maps.includes(IO_URING) };
    }),
  );
}
