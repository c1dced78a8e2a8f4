import { isAbsolute } from "node:path";
import { isLoopback } from "../host/net.js";
import { readTarMember } from "../host/tar.js";
import type { Container, PodSandbox } from "../nri/types.js";

/** CRIU's two ways with established TCP connections: dump/restore their state, or restore them closed. */
export type TcpMode = "established" | "close";

/** At checkpoint: `established` (default) or `close`. */
export const TCP_ANNOTATION = "kybernate.io/tcp";
/** At restore: `auto` (default), `established` or `close`. */
export const TCP_RESTORE_ANNOTATION = "kybernate.io/tcp-restore";

export interface TcpChoice {
  mode: TcpMode;
  reason: string;
  /** Something the restore will likely fail on whatever the mode, for the log. */
  warning?: string;
}

/** What a checkpoint recorded of its connections (kybernate.json's `network`), read from its archive. */
export interface CheckpointNetwork {
  /** How the checkpoint dumped them: one dumped with tcp-close has no connection state to restore. */
  tcp?: TcpMode;
  podIps: string[];
  tcpEstablished: string[];
  tcpListening: string[];
}

const annotation = (pod: PodSandbox, container: Container, key: string): string | undefined =>
  container.annotations[key] ?? pod.annotations[key];

/**
 * The container's CRIU choice for established TCP connections. A new container is dumped with their state
 * (leave-running keeps them; a restore may bring them back). A restored one keeps them only where they can
 * live: every local address they use is loopback or an address of the pod it is restored into; otherwise
 * CRIU would fail the restore binding a foreign address, so they come back closed and the application reads
 * end-of-stream on them.
 */
export async function tcpChoice(
  pod: PodSandbox,
  container: Container,
  readNetwork: (container: Container) => Promise<CheckpointNetwork | undefined> = checkpointNetwork,
): Promise<TcpChoice> {
  if (container.annotations.restored !== "true") {
    const asked = annotation(pod, container, TCP_ANNOTATION);
    if (asked === "close") return { mode: "close", reason: `${TCP_ANNOTATION}=close` };
    return {
      mode: "established",
      reason:
        asked === undefined || asked === "established"
          ? `${TCP_ANNOTATION}=${asked ?? "established (default)"}`
          : `${TCP_ANNOTATION}=${asked} is neither established nor close; established`,
    };
  }
  const asked = annotation(pod, container, TCP_RESTORE_ANNOTATION) ?? "auto";
  if (asked === "established" || asked === "close")
    return { mode: asked, reason: `${TCP_RESTORE_ANNOTATION}=${asked}` };
  const network = await readNetwork(container).catch(() => undefined);
  if (!network)
    return {
      mode: "close",
      reason:
        "the checkpoint records no connection addresses (not a kybernate checkpoint archive on this node)",
    };
  if (network.tcp === "close")
    return { mode: "close", reason: "the checkpoint was taken with tcp-close: it holds no connection state" };
  const here = new Set(pod.ips);
  const foreign = network.tcpEstablished.filter((a) => !isLoopback(a) && !here.has(a));
  const listeners = network.tcpListening.filter(
    (a) => !isLoopback(a) && a !== "0.0.0.0" && a !== "::" && !here.has(a),
  );
  const warning = listeners.length
    ? `listeners bound to ${listeners.join(", ")}, which this pod (${pod.ips.join(", ") || "host network"}) does not have: CRIU cannot restore them`
    : undefined;
  const choice: TcpChoice = foreign.length
    ? {
        mode: "close",
        reason: `connections on ${foreign.join(", ")}, which this pod (${pod.ips.join(", ") || "host network"}) does not have`,
      }
    : {
        mode: "established",
        reason: network.tcpEstablished.length
          ? `every connection is on loopback or an address of this pod (${network.tcpEstablished.join(", ")})`
          : "the checkpoint had no established connection",
      };
  return warning ? { ...choice, warning } : choice;
}

/** The `network` record of the checkpoint archive a restored container comes from, when it is a local tar. */
export async function checkpointNetwork(container: Container): Promise<CheckpointNetwork | undefined> {
  const archive = container.annotations.checkpointImage ?? "";
  if (!isAbsolute(archive)) return undefined;
  const bytes = await readTarMember(archive, "checkpoint/kybernate.json");
  if (!bytes) return undefined;
  // The archive may come from anywhere: only well-formed address lists are used, nothing is quoted.
  const value: unknown = JSON.parse(bytes.toString("utf8"));
  const network = (value as { network?: unknown } | null)?.network as Record<string, unknown> | undefined;
  const list = (v: unknown): string[] | undefined =>
    Array.isArray(v) &&
    v.length <= 1024 &&
    v.every((a) => typeof a === "string" && /^[0-9a-fA-F.:]{2,45}$/.test(a))
      ? (v as string[])
      : undefined;
  const podIps = list(network?.podIps);
  const tcpEstablished = list(network?.tcpEstablished);
  const tcpListening = list(network?.tcpListening);
  if (!podIps || !tcpEstablished || !tcpListening) return undefined;
  const tcp = network?.tcp === "close" || network?.tcp === "established" ? network.tcp : undefined;
  return { ...(tcp ? { tcp } : {}), podIps, tcpEstablished, tcpListening };
}
