// Which NCCL jobs the driver's checkpoint can take, and the refusal for the others. The sources of each rule are
// in docs/MULTI-GPU.md; in short: with NCCL's NVLS, P2P, SHM or IB transports the ranks hold GPU state the
// driver's checkpoint cannot move (multicast objects: cuCheckpointProcessCheckpoint hangs; memory shared between
// the ranks' CUDA contexts: a lock of one rank blocks the driver's calls on the other; memory registered with a
// NIC), so a checkpoint there hangs or fails half-way. Refusing before the driver is touched is the clean end.
import { basename } from "node:path";
import { mappedFiles, readEnviron } from "../host/proc.js";

/** What the rule needs of one CUDA process of the container. */
export interface NcclFacts {
  pid: number;
  /** Its environment; undefined when unreadable (then the rule cannot tell, and lets it pass). */
  env?: Map<string, string>;
  /** The files it maps (its shared libraries among them). */
  mapped: string[];
}

/** Set in a process's environment, it skips the check for that process (a setup checked by hand). */
export const NCCL_CHECK_VARIABLE = "KYBERNATE_NCCL_CHECK";

/** One setting a rank must run with: the variable to set and whether the environment already says so. */
interface Requirement {
  set: string;
  met: (env: Map<string, string>) => boolean;
}

// NCCL reads each of these with getenv and parses an integer (a "true" reads as 0).
const is = (env: Map<string, string>, name: string, value: string) => env.get(name)?.trim() === value;

const REQUIREMENTS: Requirement[] = [
  { set: "NCCL_NVLS_ENABLE=0", met: (env) => is(env, "NCCL_NVLS_ENABLE", "0") },
  {
    set: "NCCL_P2P_DISABLE=1",
    met: (env) =>
      is(env, "NCCL_P2P_DISABLE", "1") || /^(LOC|0)$/i.test(env.get("NCCL_P2P_LEVEL")?.trim() ?? ""),
  },
  { set: "NCCL_SHM_DISABLE=1", met: (env) => is(env, "NCCL_SHM_DISABLE", "1") },
  // With P2P and SHM off, ranks on one node talk through NCCL's network transport: InfiniBand (GPU memory
  // registered with the NIC) unless told to use sockets.
  {
    set: "NCCL_IB_DISABLE=1",
    met: (env) => is(env, "NCCL_IB_DISABLE", "1") || /^socket$/i.test(env.get("NCCL_NET")?.trim() ?? ""),
  },
];

/** The launchers' world sizes: a process that reads > 1 is one rank of several. */
const WORLD_SIZE = ["WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

const ncclLibrary = (mapped: string[]): string | undefined =>
  mapped.map((path) => basename(path)).find((name) => /^libnccl\.so(\.|$)/.test(name));

/**
 * Why the driver's checkpoint cannot take these processes, or undefined when it can (as far as their NCCL goes).
 * The rule applies to a process that loaded NCCL and is one rank of several (another process of the container
 * loaded it too, or its launcher's world size is > 1); each such rank must run with every setting above. A
 * single process that merely links NCCL (PyTorch always does) is not refused.
 */
export function ncclRefusal(processes: readonly NcclFacts[]): string | undefined {
  const loaded = processes.flatMap((p) => {
    const library = ncclLibrary(p.mapped);
    return library ? [{ ...p, library }] : [];
  });
  const ranks = loaded.filter(
    (p) => loaded.length > 1 || WORLD_SIZE.some((name) => Number.parseInt(p.env?.get(name) ?? "", 10) > 1),
  );
  for (const rank of ranks) {
    const env = rank.env;
    if (!env || env.get(NCCL_CHECK_VARIABLE)?.trim() === "off") continue;
    const missing = REQUIREMENTS.filter((r) => !r.met(env)).map((r) => r.set);
    if (missing.length === 0) continue;
    return `refusing to checkpoint: process ${rank.pid} is one of ${Math.max(ranks.length, 2)} NCCL ranks (it loaded ${rank.library}) and its environment lacks ${missing.join(" ")}; NCCL's NVLS, P2P, shared-memory and InfiniBand transports keep state the driver's checkpoint cannot move (it hangs, or stops half-way), so it was not asked: start every rank with NCCL_NVLS_ENABLE=0 NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1 (see docs/MULTI-GPU.md; a job whose ranks only use gloo can set them too, they change nothing for it), or, for a setup checked by hand, ${NCCL_CHECK_VARIABLE}=off`;
  }
  return undefined;
}

/** The facts of each process, read from the host's /proc. */
export async function readNcclFacts(pids: readonly number[]): Promise<NcclFacts[]> {
  return Promise.all(
    pids.map(async (pid) => {
      const [env, mapped] = await Promise.all([readEnviron(pid), mappedFiles(pid)]);
      return { pid, mapped, ...(env ? { env } : {}) };
    }),
  );
}
