import type { Logger } from "../base/log.js";
import type { OperationRecord } from "../gpu/engine.js";
import type { DaemonReply, HookAction, HookRequest } from "./protocol.js";
import type { StageContext } from "./stage-context.js";

/** The logger of one stage of one container: its id, pod and container names and the stage. */
export function stageLog(
  ctx: StageContext,
  containerId: string,
  action: HookAction | "resume" | "repair",
): Logger {
  return ctx.log.child({ containerId, ...ctx.containers.names(containerId), action });
}

/** A failed hook request: logged, kept as the container's last operation, answered. */
export function fail(
  ctx: StageContext,
  request: HookRequest,
  error: string,
  record?: OperationRecord,
): DaemonReply {
  ctx.log.error({ containerId: request.containerId, action: request.action, error }, "GPU stage failed");
  const kind = request.action === "pre-dump" || request.action === "post-dump" ? "checkpoint" : "restore";
  ctx.containers.finished(request.containerId, kind, {
    ok: false,
    error,
    ...(record ? { record } : {}),
  });
  return { ok: false, error };
}

/** One line for an engine failure: which process, in which step, and whether the rest came back. */
export function describeFailure(record: OperationRecord): string {
  const failure = record.failure;
  const what = failure ? `process ${failure.pid}: ${failure.message}` : "unknown failure";
  const rollback = record.rollback
    ? record.rollback.ok
      ? "; every process is back on the GPU"
      : "; ROLLBACK INCOMPLETE"
    : "";
  return `GPU ${record.op} failed at ${what}${rollback}`;
}
