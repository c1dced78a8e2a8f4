import { access, realpath } from "node:fs/promises";
import type { GpuBackend } from "../gpu/backend.js";
import { discoverCudaProcesses } from "../gpu/discovery.js";
import { ProcessCgroups, processesOfCgroup, readMemoryLevel, writeMemoryLimit } from "../host/cgroup.js";
import {
  identify,
  isSameProcess,
  livingPids,
  openFds,
  parentOf,
  readCmdline,
  tracerOf,
} from "../host/proc.js";
import { readTail } from "../host/tail.js";
import type { LimitHost } from "./memory-limits.js";
import type { HostView } from "./stage-context.js";

/** The memory cgroups as MemoryLimits writes them. */
export function limitHost(): LimitHost {
  return {
    readLevel: (dir) => readMemoryLevel(dir),
    writeLimit: (dir, file, text) => writeMemoryLimit(dir, file, text),
    traced: async (dir) => {
      const tracers = await Promise.all((await processesOfCgroup(dir)).map((pid) => tracerOf(pid)));
      return tracers.some((t) => (t ?? 0) !== 0);
    },
  };
}

/** The real host: /proc, the container's cgroups (read once per stage) and the driver through `backend`. */
export function hostView(backend: GpuBackend): HostView {
  return {
    async container(initPid) {
      const cgroups = await ProcessCgroups.ofPid(initPid);
      return {
        freezer: () => cgroups.freezer(),
        discover: (mode, deadline) =>
          discoverCudaProcesses({ cgroups, backend, mode, ...(deadline ? { deadline } : {}) }),
        memoryLevels: () => cgroups.memoryLevels(),
      };
    },
    identify: (pid) => identify(pid),
    isSameProcess: (identity) => isSameProcess(identity),
    tracerOf: (pid) => tracerOf(pid),
    livingPids: (pids) => livingPids(pids),
    parentOf: (pid) => parentOf(pid),
    commandLine: (pid) => readCmdline(pid),
    realPath: (path) => realpath(path).catch(() => undefined),
    openFiles: async (pid) => {
      const paths = await Promise.all(
        (await openFds(pid)).map((fd) => realpath(fd.procPath).catch(() => "")),
      );
      return paths.filter((p) => p.startsWith("/"));
    },
    readTail: (path, bytes) => readTail(path, bytes),
    exists: (path) =>
      access(path).then(
        () => true,
        () => false,
      ),
  };
}
