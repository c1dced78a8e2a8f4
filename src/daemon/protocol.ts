// The hook ↔ daemon protocol: one JSON request line, one JSON reply line, over a root-only unix socket.
// Kept tiny because the hook runs while a container is frozen.

export type HookAction = "pre-dump" | "post-resume";

export interface HookRequest {
  kind: "hook";
  action: HookAction;
  containerId: string;
  /** Host pid of the container's init (CRTOOLS_INIT_PID). */
  initPid: number;
  /** The CRIU process running the hook: its exit tells the daemon the dump is over. */
  criuPid: number;
  /** CRIU's image directory (through CRIU's fd), where checkpoint metadata can be left. */
  imageDir?: string;
  /** Milliseconds the hook will wait for the reply. */
  deadlineMs: number;
}

export interface StatusRequest {
  kind: "status";
}

export type DaemonRequest = HookRequest | StatusRequest;

export interface DaemonReply {
  ok: boolean;
  error?: string;
  data?: unknown;
}

export const DEFAULT_DAEMON_SOCKET = "/run/kybernate/daemon.sock";
