// The hook ↔ daemon protocol: one JSON request line, one JSON reply line, over a root-only unix socket.
// Kept tiny because the hook runs while a container is frozen.

import type { GpuRequest } from "../checkpoint/gpu-request.js";

/** The CRIU actions the hook forwards (the others it answers itself). */
export const HOOK_ACTIONS = ["pre-dump", "post-dump", "pre-restore", "post-resume"] as const;
export type HookAction = (typeof HOOK_ACTIONS)[number];

/** What the status reply calls a finished GPU operation. */
export type OperationKind = "checkpoint" | "restore" | "repair";

/**
 * How much longer the hook waits for a reply than the daemon's GPU budget: the daemon's own answer (an undo of
 * the GPU stage included) reaches the hook before it gives up. The action script carries budget + margin.
 */
export const HOOK_REPLY_MARGIN_MS = 5_000;

export interface HookRequest {
  kind: "hook";
  action: HookAction;
  containerId: string;
  /** Host pid of the container's init (CRTOOLS_INIT_PID); 0 at pre-restore, before any process exists. */
  initPid: number;
  /** The CRIU process running the hook: its exit tells the daemon the dump is over. */
  criuPid: number;
  /** CRIU's image directory (through CRIU's fd), where checkpoint metadata can be left. */
  imageDir?: string;
  /** Milliseconds the hook will wait for the reply (the action script's KYBERNATE_HOOK_TIMEOUT_MS). */
  deadlineMs: number;
}

export interface StatusRequest {
  kind: "status";
}

/** The node's page store, for `kybernate store`, and an archive's path from `kybernate checkpoint`. */
export type StoreRequest =
  | { kind: "store"; op: "ls" }
  | { kind: "store"; op: "gc"; keep?: number }
  | { kind: "store"; op: "archive"; checkpointId: string; path: string };

export type DaemonRequest = HookRequest | StatusRequest | StoreRequest;

export interface DaemonReply {
  ok: boolean;
  error?: string;
  data?: unknown;
}

export const DEFAULT_DAEMON_SOCKET = "/run/kybernate/daemon.sock";

// The status reply (`kybernate ps` reads it): the daemon builds it, the CLI parses it. One definition, so
// the two cannot drift apart.

/** A container the NRI plugin marked for kybernate, and why. */
export interface ManagedContainer {
  id: string;
  name: string;
  pod: string;
  reason: string;
  restored: boolean;
  since: string;
  /** The GPUs its spec asks for (device nodes, NVIDIA_VISIBLE_DEVICES): a restore goes onto these. */
  gpuRequest?: GpuRequest;
  /** Its pod's IPs (none for a host-network pod): a checkpoint records them beside its connections. */
  podIps?: string[];
  /** How its CRIU configuration has CRIU dump established TCP connections. */
  tcp?: "established" | "close";
  /** false: the pod or container says `kybernate.io/page-store: "false"`, its checkpoints stay self-contained. */
  pageStore?: boolean;
}

/** A GPU stage in flight. */
export interface ContainerActivity {
  containerId: string;
  action: HookAction | "repair";
  since: string;
}

/** Where a checkpoint's time went, as kybernate saw it (ms); see daemon/timeline.ts. */
export interface CheckpointPhasesMs {
  preDump?: number;
  gpuFreeze?: number;
  criuDump?: number;
  pageStore?: number;
  untilResume?: number;
  gpuThaw?: number;
  total?: number;
}

/** How a container's last GPU stage ended. */
export interface LastOperationStatus {
  containerId: string;
  action: OperationKind;
  ok: boolean;
  at: string;
  error?: string;
  /** A checkpoint's phases (kept after the resume watcher saw it end). */
  phasesMs?: CheckpointPhasesMs;
  /** The page store's id of the checkpoint, when its pages went there. */
  checkpointId?: string;
}

export interface DaemonStatusData {
  managed: ManagedContainer[];
  busy: ContainerActivity[];
  last: LastOperationStatus[];
  /** The node's page store, when kybernate runs with one. */
  pageStore?: { dir: string; node: string; keep: number };
}
