/**
 * Which checkpoints the page store deletes: beyond the newest `keep` of their container, or whose archive is known
 * to be gone, or never completed (a post-dump cut short). A checkpoint a restore is using is never deleted,
 * whatever the rest says. Pure: page-store.ts gathers the facts, this decides.
 */
export interface CollectCandidate {
  id: string;
  containerId: string;
  createdAt: string;
  /** record.json written: the checkpoint is whole. */
  complete: boolean;
  /** For an incomplete one: when its directory was made (ms since the epoch). */
  startedMs?: number;
  /** true: its archive was recorded and is no longer there. */
  archiveGone?: boolean;
}

export type CollectReason = "beyond keep" | "archive gone" | "incomplete";

export interface CollectDecision {
  remove: Array<{ id: string; reason: CollectReason }>;
  /** Would have gone, but a restore uses it. */
  protected: Array<{ id: string; reason: CollectReason }>;
}

export interface CollectPolicy {
  /** Checkpoints kept per container, newest first. */
  keep: number;
  inUse: ReadonlySet<string>;
  /** Checkpoints being written now (a post-dump in flight): never touched. */
  inFlight?: ReadonlySet<string>;
  now: number;
  /** How old an incomplete checkpoint must be before it counts as abandoned (none in flight after a restart). */
  incompleteAfterMs: number;
}

export function decideCollection(
  candidates: readonly CollectCandidate[],
  policy: CollectPolicy,
): CollectDecision {
  const decision: CollectDecision = { remove: [], protected: [] };
  const verdict = (id: string, reason: CollectReason) =>
    (policy.inUse.has(id) ? decision.protected : decision.remove).push({ id, reason });
  const byContainer = new Map<string, CollectCandidate[]>();
  for (const c of candidates) {
    if (policy.inFlight?.has(c.id)) continue;
    if (!c.complete) {
      if (policy.now - (c.startedMs ?? 0) >= policy.incompleteAfterMs) verdict(c.id, "incomplete");
      continue;
    }
    byContainer.set(c.containerId, [...(byContainer.get(c.containerId) ?? []), c]);
  }
  for (const list of byContainer.values()) {
    list.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
    for (const [i, c] of list.entries()) {
      if (i >= policy.keep) verdict(c.id, "beyond keep");
      else if (c.archiveGone) verdict(c.id, "archive gone");
    }
  }
  return decision;
}
