import type { CriClient } from "../cri/client.js";
import type { Container, PodSandbox } from "../cri/types.js";
import { CliError } from "./cli-error.js";

export const shortId = (id: string): string => id.slice(0, 13);

const stateWord = (s: string): string => s.replace(/^(CONTAINER|SANDBOX)_/, "").toLowerCase();

/**
 * The one item a user meant: an exact id, else every item whose id starts with the query or whose name
 * equals it (as crictl and docker accept both). More than one is an error listing them, so nothing is
 * acted on by guess.
 */
function pick<T extends { id: string }>(
  items: T[],
  query: string,
  nameOf: (item: T) => string[],
): { match?: T; candidates: T[] } {
  const exact = items.find((i) => i.id === query);
  if (exact) return { match: exact, candidates: [exact] };
  const candidates = items.filter((i) => i.id.startsWith(query) || nameOf(i).includes(query));
  return candidates.length === 1 ? { match: candidates[0], candidates } : { candidates };
}

export interface ResolvedContainer {
  container: Container;
  /** The container's pod, when the runtime still lists it. */
  pod?: PodSandbox;
}

/** CONTAINER as the user typed it (id, unique id prefix, or name) → the container and its pod. */
export async function resolveContainer(cri: CriClient, query: string): Promise<ResolvedContainer> {
  if (!query) throw new CliError("name a container (id, id prefix or name)", 2);
  const [containers, pods] = await Promise.all([cri.listContainers(), cri.listPodSandbox()]);
  const podOf = (c: Container) => pods.find((p) => p.id === c.podSandboxId);
  const { match, candidates } = pick(containers, query, (c) => [c.metadata?.name ?? ""]);
  if (match) {
    const pod = podOf(match);
    return pod ? { container: match, pod } : { container: match };
  }
  if (!candidates.length) {
    throw new CliError(
      `no container named "${query}" and none whose id starts with it on ${cri.address} ` +
        `(${containers.length} containers there; list them with kybernate ps --all)`,
      2,
    );
  }
  const lines = candidates.map((c) => {
    const pod = podOf(c);
    const where = pod?.metadata
      ? `${pod.metadata.namespace}/${pod.metadata.name}`
      : c.podSandboxId.slice(0, 13);
    return `  ${shortId(c.id)}  ${c.metadata?.name ?? "?"}  pod ${where}  ${stateWord(c.state)}`;
  });
  throw new CliError(
    `"${query}" matches ${candidates.length} containers; name one by a longer id prefix:\n${lines.join("\n")}`,
    2,
  );
}

/** POD as the user typed it (id, unique id prefix, name, or namespace/name) → the pod. */
export async function resolvePod(cri: CriClient, query: string): Promise<PodSandbox> {
  if (!query) throw new CliError("name a pod (id, id prefix, name or namespace/name)", 2);
  const pods = await cri.listPodSandbox();
  const { match, candidates } = pick(pods, query, (p) =>
    p.metadata ? [p.metadata.name, `${p.metadata.namespace}/${p.metadata.name}`] : [],
  );
  if (match) return match;
  if (!candidates.length) {
    throw new CliError(
      `no pod named "${query}" and none whose id starts with it on ${cri.address} (${pods.length} pods there)`,
      2,
    );
  }
  const lines = candidates.map(
    (p) =>
      `  ${shortId(p.id)}  ${p.metadata?.namespace ?? "?"}/${p.metadata?.name ?? "?"}  ${stateWord(p.state)}`,
  );
  throw new CliError(
    `"${query}" matches ${candidates.length} pods; name one by a longer id prefix or as namespace/name:\n${lines.join("\n")}`,
    2,
  );
}

/** The host pid of a container's init, from the runtime's verbose ContainerStatus (containerd: info.pid). */
export async function initPidOf(cri: CriClient, containerId: string): Promise<number> {
  const res = await cri.containerStatus(containerId, true);
  const state = res.status?.state ?? "CONTAINER_UNKNOWN";
  if (state !== "CONTAINER_RUNNING") {
    throw new CliError(
      `container ${shortId(containerId)} is ${stateWord(state)}, not running: it has no processes`,
      2,
    );
  }
  const raw = res.info.info;
  let pid: unknown;
  try {
    pid = raw ? (JSON.parse(raw) as { pid?: unknown }).pid : undefined;
  } catch {
    pid = undefined;
  }
  if (typeof pid !== "number" || !Number.isInteger(pid) || pid <= 0) {
    throw new CliError(
      `the runtime on ${cri.address} gave no init pid for container ${shortId(containerId)} ` +
        "(verbose ContainerStatus info.pid); name its processes with --pid or its cgroup with --cgroup",
      2,
    );
  }
  return pid;
}
