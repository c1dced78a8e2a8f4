import { Deadline } from "../base/deadline.js";
import { postDump } from "./post-dump.js";
import { preDump } from "./pre-dump.js";
import { type DaemonReply, HOOK_REPLY_MARGIN_MS, type HookRequest } from "./protocol.js";
import { recover, repairStranded } from "./repair.js";
import { postResume, preRestore } from "./restore.js";
import { ResumeWatchers } from "./resume-watcher.js";
import type { StageContext } from "./stage-context.js";

/**
 * Owns every GPU state change of a container around CRIU, one operation per container at a time: it takes the
 * container's slot, gives the stage its deadline, and hands a checkpoint's GPU state to a resume watcher.
 * Each stage journals before it touches the driver.
 */
export class Coordinator {
  private readonly watchers: ResumeWatchers;

  constructor(private readonly ctx: StageContext) {
    this.watchers = new ResumeWatchers(ctx);
  }

  async handle(request: HookRequest): Promise<DaemonReply> {
    const { containers, log } = this.ctx;
    // Post-dump is part of the checkpoint whose watcher holds the container's slot: it joins that operation.
    const joining = request.action === "post-dump" ? this.watchers.active(request.containerId) : undefined;
    if (joining) {
      const deadline = this.stageDeadline(request);
      try {
        return await postDump(this.ctx, request, deadline, joining);
      } finally {
        deadline.dispose();
      }
    }
    const begun = containers.begin(request.containerId, request.action);
    if (!begun.ok) {
      log.warn(
        { containerId: request.containerId, action: request.action, error: begun.error },
        "GPU stage refused",
      );
      return { ok: false, error: begun.error };
    }
    const deadline = this.stageDeadline(request);
    let watching = false;
    try {
      switch (request.action) {
        case "pre-dump": {
          const result = await preDump(this.ctx, request, deadline);
          if (result.watch) {
            this.watchers.start(result.watch);
            watching = true;
          }
          return result.reply;
        }
        case "post-dump":
          return await postDump(this.ctx, request, deadline);
        case "pre-restore":
          return await preRestore(this.ctx, request);
        case "post-resume":
          return await postResume(this.ctx, request, deadline);
        default:
          return { ok: false, error: `unknown hook action "${String(request.action)}"` };
      }
    } finally {
      deadline.dispose();
      if (!watching) containers.end(request.containerId);
    }
  }

  /**
   * The stage's one deadline: --gpu-budget, and never past the moment the hook stops waiting for the answer
   * (the action script gives the hook budget + margin, so the budget is what counts).
   */
  private stageDeadline(request: HookRequest): Deadline {
    const ms = Math.min(this.ctx.timing.gpuBudgetMs, request.deadlineMs - HOOK_REPLY_MARGIN_MS);
    return Deadline.after(ms, { what: `the GPU stage of the ${request.action} of ${request.containerId}` });
  }

  /** At start: finish or undo whatever the journal lists. */
  recover(): Promise<void> {
    return recover(this.ctx, this.watchers);
  }

  /** After a (re)synchronize: bring back GPU processes stranded while no daemon ran. */
  repairStranded(containers: ReadonlyArray<{ containerId: string; initPid: number }>): Promise<void> {
    return repairStranded(this.ctx, containers);
  }

  async close(): Promise<void> {
    await this.watchers.close();
  }
}
