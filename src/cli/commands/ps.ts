import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { Deadline } from "../../base/deadline.js";
import type { CriClient } from "../../cri/client.js";
import type { Container, PodSandbox } from "../../cri/types.js";
import type { ContainerActivity, LastOperationStatus } from "../../daemon/protocol.js";
import { describePhases } from "../../daemon/timeline.js";
import type { GpuBackend } from "../../gpu/backend.js";
import { discoverCudaProcesses } from "../../gpu/discovery.js";
import { stateName } from "../../gpu/types.js";
import { exitWithError } from "../cli-error.js";
import { type DaemonStatus, fetchDaemonStatus } from "../daemon-status.js";
import { type EndpointArgs, openCri, withEndpoints } from "../endpoints.js";
import { type GpuBackendArgs, openGpuBackend, withGpuBackend } from "../gpu-options.js";
import { initPidOf, shortId } from "../resolve.js";

export interface PsRow {
  id: string;
  name: string;
  /** "namespace/name". */
  pod: string;
  /** CRI state (running, exited, …) or "gone" when the daemon knows a container CRI no longer lists. */
  state: string;
  managed: boolean;
  reason?: string;
  restored?: boolean;
  busy?: ContainerActivity;
  /** The CUDA processes and their driver states; absent when not asked or not running. */
  cuda?: Array<{ pid: number; state: string }>;
  cudaError?: string;
  last?: LastOperationStatus;
}

export interface PsReport {
  daemon: { socket: string; reachable: boolean; error?: string };
  rows: PsRow[];
}

export interface PsOptions {
  cri: CriClient;
  daemonSocket: string;
  /** Every container CRI lists, not only those kybernate manages. */
  all?: boolean;
  /** The GPU backend, or why there is none (CUDA states are then unknown). */
  backend: GpuBackend | Error;
  daemonTimeoutMs?: number;
  /** How a container's CUDA processes are found (tests replace the /proc and cgroup walk). */
  discover?: typeof discoverCudaProcesses;
}

/**
 * kybernate's GPU containers: the daemon's list joined with what CRI says of each, plus the CUDA state of
 * each container's processes. Without the daemon, every container CRI lists.
 */
export async function psReport(o: PsOptions): Promise<PsReport> {
  const [daemon, containers, pods] = await Promise.all([
    fetchDaemonStatus(o.daemonSocket, o.daemonTimeoutMs ?? 2000),
    o.cri.listContainers(),
    o.cri.listPodSandbox(),
  ]);
  const podText = (c: Container) => {
    const p: PodSandbox | undefined = pods.find((x) => x.id === c.podSandboxId);
    return p?.metadata ? `${p.metadata.namespace}/${p.metadata.name}` : shortId(c.podSandboxId);
  };
  const listAll = o.all || !daemon.reachable;
  const d: Extract<DaemonStatus, { reachable: true }> = daemon.reachable
    ? daemon
    : { reachable: true, managed: [], busy: [], last: [] };
  const ids = new Set<string>(listAll ? containers.map((c) => c.id) : []);
  for (const m of d.managed) ids.add(m.id);

  const rows = await Promise.all(
    [...ids].map(async (id): Promise<PsRow> => {
      const c = containers.find((x) => x.id === id);
      const m = d.managed.find((x) => x.id === id);
      const busy = d.busy.find((x) => x.containerId === id);
      const last = d.last.find((x) => x.containerId === id);
      const row: PsRow = {
        id,
        name: c?.metadata?.name ?? m?.name ?? "?",
        pod: c ? podText(c) : (m?.pod ?? "?"),
        state: c ? c.state.replace("CONTAINER_", "").toLowerCase() : "gone",
        managed: !!m,
        ...(m ? { reason: m.reason, restored: m.restored } : {}),
        ...(busy ? { busy } : {}),
        ...(last ? { last } : {}),
      };
      if (c?.state === "CONTAINER_RUNNING")
        Object.assign(row, await cudaStates(o.cri, id, o.backend, o.discover ?? discoverCudaProcesses));
      return row;
    }),
  );
  rows.sort((a, b) => a.pod.localeCompare(b.pod) || a.name.localeCompare(b.name));
  return {
    daemon: {
      socket: o.daemonSocket,
      reachable: daemon.reachable,
      ...(daemon.reachable ? {} : { error: daemon.error }),
    },
    rows,
  };
}

async function cudaStates(
  cri: CriClient,
  id: string,
  backend: GpuBackend | Error,
  discover: typeof discoverCudaProcesses,
): Promise<Pick<PsRow, "cuda" | "cudaError">> {
  if (backend instanceof Error) return { cudaError: `no GPU backend: ${backend.message}` };
  try {
    const initPid = await initPidOf(cri, id);
    // "any": a CHECKPOINTED process holds no NVIDIA device any more, yet it is the one worth seeing.
    const found = await discover({
      initPid,
      backend,
      mode: "any",
      deadline: Deadline.after(5000, { what: "CUDA state query" }),
    });
    const broken = found.skipped.find((s) => /BACKEND_FAILURE|DEADLINE_EXCEEDED/.test(s.reason));
    if (!found.cuda.length && broken) return { cudaError: broken.reason.replace(/^driver: /, "") };
    return { cuda: found.cuda.map((p) => ({ pid: p.pid, state: stateName(p.state) })) };
  } catch (err) {
    return { cudaError: (err as Error).message };
  }
}

function cudaCell(r: PsRow): string {
  if (r.cudaError) return "?";
  if (!r.cuda) return "-";
  if (!r.cuda.length) return "none";
  const counts = new Map<string, number>();
  for (const p of r.cuda) counts.set(p.state, (counts.get(p.state) ?? 0) + 1);
  return [...counts].map(([s, n]) => (n > 1 ? `${s}x${n}` : s)).join(",");
}

function kybernateCell(r: PsRow): string {
  if (r.busy) return `${r.busy.action}…`;
  if (!r.managed) return "-";
  return r.restored ? "restored" : "managed";
}

function lastCell(r: PsRow): string {
  if (!r.last) return "-";
  const at = r.last.at.replace(/^\d{4}-\d\d-\d\dT/, "").replace(/\.\d+Z$/, "Z");
  return `${r.last.action} ${r.last.ok ? "ok" : "FAILED"} ${at}`;
}

/** The table `kybernate ps` prints, with the notes (daemon down, errors) after it. */
export function renderPs(report: PsReport): string {
  const withPhases = report.rows.some((r) => r.last?.phasesMs);
  const header = [
    "CONTAINER",
    "NAME",
    "POD",
    "STATE",
    "CUDA",
    "KYBERNATE",
    "LAST",
    ...(withPhases ? ["PHASES"] : []),
  ];
  const cells = report.rows.map((r) => [
    shortId(r.id),
    r.name,
    r.pod,
    r.state,
    cudaCell(r),
    kybernateCell(r),
    lastCell(r),
    ...(withPhases ? [r.last?.phasesMs ? describePhases(r.last.phasesMs) || "-" : "-"] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => (row[i] ?? "").length)));
  const line = (row: string[]) =>
    row
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const out = [line(header), ...cells.map(line)];
  const notes: string[] = [];
  if (!report.daemon.reachable) {
    notes.push(`kybernate daemon not reachable (${report.daemon.error}); listing every container CRI shows`);
  }
  if (!report.rows.length)
    notes.push(
      report.daemon.reachable
        ? "kybernate manages no container (kybernate ps --all lists every one)"
        : "CRI lists no container",
    );
  // A node without GPU tooling fails the same way for every container: one note, not one per row.
  const unknown = new Map<string, string[]>();
  for (const r of report.rows) {
    if (!r.cudaError) continue;
    const why = r.cudaError.replace(/ of pid \d+/, "");
    unknown.set(why, [...(unknown.get(why) ?? []), shortId(r.id)]);
  }
  for (const [why, ids] of unknown) notes.push(`CUDA state unknown for ${ids.join(", ")}: ${why}`);
  for (const r of report.rows) {
    if (r.last && !r.last.ok)
      notes.push(`${shortId(r.id)} last ${r.last.action} failed: ${r.last.error ?? "no reason given"}`);
  }
  return [...out, ...notes.map((n) => `note: ${n}`)].join("\n");
}

interface PsArgs extends EndpointArgs, GpuBackendArgs {
  all: boolean;
  json: boolean;
}

export const psCommand: CommandModule<object, PsArgs> = {
  command: "ps",
  describe:
    "List the GPU containers kybernate manages, the CUDA state of their processes and their last checkpoint",
  builder: (yargs: Argv) =>
    withGpuBackend(
      withEndpoints(
        yargs
          .option("all", {
            alias: "a",
            type: "boolean",
            default: false,
            describe: "every container CRI lists",
          })
          .option("json", { type: "boolean", default: false, describe: "print the report as JSON" }),
      ),
    ) as unknown as Argv<PsArgs>,
  handler: async (args: ArgumentsCamelCase<PsArgs>) => {
    let cri: CriClient | undefined;
    let backend: GpuBackend | Error | undefined;
    try {
      cri = openCri(args.runtimeEndpoint);
      try {
        backend = openGpuBackend(args);
      } catch (err) {
        backend = err as Error;
      }
      const report = await psReport({ cri, daemonSocket: args.socket, all: args.all, backend });
      process.stdout.write(`${args.json ? JSON.stringify(report, null, 2) : renderPs(report)}\n`);
    } catch (err) {
      exitWithError("ps", err);
    } finally {
      cri?.close();
      if (backend && !(backend instanceof Error)) backend.close();
    }
    // A driver call cut by its deadline may keep a worker thread busy (see runGpuCommand).
    process.exit(0);
  },
};
