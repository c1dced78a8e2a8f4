/**
 * The GPU double inside a CRI container on the test node: the mounts that make a container a GPU container
 * running the double, and the double's status as the workload sees it (read through CRI exec).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { MountSpec } from "../../src/cri/client.js";
import type { WorkloadStatus } from "../gpu/double/harness.js";
import type { TestCriClient } from "./test-cri-client.js";

export type { WorkloadStatus };

/** Where the double's processes write their status files inside the container (its default FAKE_CUDA_DIR). */
export const CONTAINER_FAKE_CUDA_DIR = "/tmp/fake-cuda";

/**
 * The double's binaries at /kyb, and a regular file where the driver's control node would be: the container
 * is a GPU container by the same rule as a real one, and the workload holds it open like /dev/nvidiactl.
 */
export function gpuDoubleMounts(doubleDir: string, nvidiactl: string, extra: MountSpec[] = []): MountSpec[] {
  return [
    { containerPath: "/kyb", hostPath: doubleDir, readonly: true },
    { containerPath: "/dev/nvidiactl", hostPath: nvidiactl },
    ...extra,
  ];
}

/** The status of every double process in the container; none while the container cannot run an exec. */
export async function workloadStatuses(cri: TestCriClient, containerId: string): Promise<WorkloadStatus[]> {
  const { stdout, exitCode } = await cri.exec(
    containerId,
    ["sh", "-c", `for f in ${CONTAINER_FAKE_CUDA_DIR}/*.json; do [ -f "$f" ] && cat "$f" && echo; done`],
    10,
  );
  if (exitCode !== 0) return [];
  return stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as WorkloadStatus);
}

/**
 * The status of a double process read from the host, through its root (/proc/PID/root): for when CRI cannot
 * exec into its container (containerd lists it UNKNOWN). `hostPid` is the process's pid on the host.
 */
export function workloadStatusOnHost(hostPid: number): WorkloadStatus | undefined {
  const nsPid = /^NSpid:.*\s(\d+)$/m.exec(readFileSync(`/proc/${hostPid}/status`, "utf8"))?.[1];
  const file = `/proc/${hostPid}/root${CONTAINER_FAKE_CUDA_DIR}/${nsPid}.json`;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as WorkloadStatus;
  } catch {
    return undefined;
  }
}

/**
 * Polls until the container's double processes satisfy `ok` (there is at least one); on timeout the error
 * shows the last statuses and the tail of kybernate's log, which usually says why.
 */
export async function waitForWorkload(
  cri: TestCriClient,
  containerId: string,
  ok: (all: WorkloadStatus[]) => boolean,
  options: { timeoutMs?: number; what?: string; kybernateLogs?: () => Array<Record<string, unknown>> } = {},
): Promise<WorkloadStatus[]> {
  const until = Date.now() + (options.timeoutMs ?? 15_000);
  let last: WorkloadStatus[] = [];
  while (Date.now() < until) {
    last = await workloadStatuses(cri, containerId).catch(() => []);
    if (last.length > 0 && ok(last)) return last;
    await sleep(100);
  }
  const what = options.what ?? `workload in ${containerId.slice(0, 12)} never reached the expected state`;
  const tail = (options.kybernateLogs?.() ?? []).slice(-12).map((l) => JSON.stringify(l).slice(0, 300));
  throw new Error(`${what}; last: ${JSON.stringify(last)}\nkybernate log:\n${tail.join("\n")}`);
}

/**
 * `kybernate run` flags for driving the double: its libcuda, the network lock CRIU offers (asked of the test
 * node's CRIU; pod-network pods hold real connections), a short frozen grace so a fault ends within a test's
 * timeout, and the test node's containerd (its Tasks API resumes a task whose checkpoint a caller's deadline cut).
 */
export function kybernateArgsForDouble(
  doubleDir: string,
  node?: { containerdSocket: string; bin: { criu: string } },
): string[] {
  return [
    "--gpu-backend",
    "driver",
    "--libcuda",
    join(doubleDir, "libcuda.so.1"),
    "--frozen-grace",
    "5",
    ...(node ? ["--containerd-socket", node.containerdSocket, "--criu", node.bin.criu] : []),
  ];
}
