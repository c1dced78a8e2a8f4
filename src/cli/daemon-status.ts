import { askDaemon } from "../daemon/client.js";
import type {
  CheckpointPhasesMs,
  ContainerActivity,
  DaemonStatusData,
  LastOperationStatus,
} from "../daemon/protocol.js";

export type DaemonStatus = ({ reachable: true } & DaemonStatusData) | { reachable: false; error: string };

/**
 * The daemon's view (which containers it manages, what it is doing, how each container's last GPU stage
 * ended), or why it could not be had: `ps` still lists what CRI shows without it.
 */
export async function fetchDaemonStatus(socket: string, timeoutMs = 2000): Promise<DaemonStatus> {
  try {
    const reply = await askDaemon(socket, { kind: "status" }, timeoutMs);
    if (!reply.ok)
      return { reachable: false, error: `the daemon on ${socket} refused: ${reply.error ?? "no reason"}` };
    const data = isObject(reply.data) ? reply.data : {};
    return {
      reachable: true,
      managed: list(data.managed).flatMap((m) =>
        typeof m.id === "string"
          ? [
              {
                id: m.id,
                name: text(m.name),
                pod: text(m.pod),
                reason: text(m.reason),
                restored: m.restored === true,
                since: text(m.since),
              },
            ]
          : [],
      ),
      busy: list(data.busy).flatMap((b) =>
        typeof b.containerId === "string"
          ? [
              {
                containerId: b.containerId,
                action: text(b.action) as ContainerActivity["action"],
                since: text(b.since),
              },
            ]
          : [],
      ),
      last: list(data.last).flatMap((l) =>
        typeof l.containerId === "string"
          ? [
              {
                containerId: l.containerId,
                action: text(l.action) as LastOperationStatus["action"],
                ok: l.ok === true,
                at: text(l.at),
                ...(typeof l.error === "string" ? { error: l.error } : {}),
                ...(isObject(l.phasesMs) ? { phasesMs: phases(l.phasesMs) } : {}),
                ...(typeof l.checkpointId === "string" ? { checkpointId: l.checkpointId } : {}),
              },
            ]
          : [],
      ),
      ...(isObject(data.pageStore) && typeof data.pageStore.dir === "string"
        ? {
            pageStore: {
              dir: data.pageStore.dir,
              node: text(data.pageStore.node),
              keep: Number(data.pageStore.keep) || 0,
            },
          }
        : {}),
    };
  } catch (err) {
    return { reachable: false, error: (err as Error).message };
  }
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const list = (v: unknown): Json[] => (Array.isArray(v) ? v.filter(isObject) : []);
const text = (v: unknown): string => (typeof v === "string" ? v : "");
const phases = (v: Json): CheckpointPhasesMs =>
  Object.fromEntries(Object.entries(v).filter(([, ms]) => typeof ms === "number")) as CheckpointPhasesMs;
