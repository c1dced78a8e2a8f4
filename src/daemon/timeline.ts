import type { FollowingHasher } from "../store/follow-hash.js";
import type { CheckpointPhasesMs } from "./protocol.js";

/**
 * One checkpoint as kybernate sees it, in wall-clock time: its pre-dump (the GPU freeze inside it), CRIU's dump
 * (pre-dump's end to post-dump), the page store's stage at post-dump, and the rest until containerd resumes the
 * container; then the GPU thaw. containerd's own steps after the resume (its untar and the export tar) are not
 * seen here: the GPU end-to-end script samples its directories for those.
 */
export class CheckpointTimeline {
  preDumpEndAt?: number;
  gpuFreezeMs?: number;
  vramBytes?: number;
  /** CRIU reached post-dump: its images are written. */
  postDumpAt?: number;
  postDumpEndAt?: number;
  /** What the page store took (absent: a self-contained checkpoint). */
  stored?: { checkpointId: string; bytes: number; files: number };
  /** Why the checkpoint stays self-contained although a page store is configured. */
  selfContainedBecause?: string;
  resumedAt?: number;
  gpuThawMs?: number;

  constructor(readonly startedAt: number) {}

  phases(): CheckpointPhasesMs {
    const span = (from: number | undefined, to: number | undefined) =>
      from !== undefined && to !== undefined && to >= from ? Math.round(to - from) : undefined;
    const criuDone = this.postDumpEndAt ?? this.postDumpAt;
    const out: CheckpointPhasesMs = {
      preDump: span(this.startedAt, this.preDumpEndAt),
      gpuFreeze: this.gpuFreezeMs !== undefined ? Math.round(this.gpuFreezeMs) : undefined,
      criuDump: span(this.preDumpEndAt, this.postDumpAt),
      pageStore: this.stored ? span(this.postDumpAt, this.postDumpEndAt) : undefined,
      untilResume: span(criuDone, this.resumedAt),
      gpuThaw: this.gpuThawMs !== undefined ? Math.round(this.gpuThawMs) : undefined,
      total: span(this.startedAt, this.resumedAt),
    };
    return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined)) as CheckpointPhasesMs;
  }
}

/** `freeze 8.4 s · dump 9.5 s · store 8.1 s · to resume 1.2 s · thaw 3.1 s` for `kybernate ps`. */
export function describePhases(p: CheckpointPhasesMs): string {
  const s = (ms: number | undefined) => (ms === undefined ? undefined : `${(ms / 1000).toFixed(1)} s`);
  return [
    ["freeze", s(p.gpuFreeze)],
    ["dump", s(p.criuDump)],
    ["store", s(p.pageStore)],
    ["to resume", s(p.untilResume)],
    ["thaw", s(p.gpuThaw)],
  ]
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k} ${v}`)
    .join(" · ");
}

/** One checkpoint of a container from its pre-dump to its resume: its timeline and what was decided for it. */
export interface CheckpointRun {
  timeline: CheckpointTimeline;
  /** Its page images go to the page store at post-dump. */
  withStore: boolean;
  /** What admission expected CRIU to write (VRAM + the processes' memory), when it could tell. */
  expectedImageBytes?: number;
  /** Why kybernate failed the checkpoint after its GPU stage (post-dump): the checkpoint ended failed. */
  failure?: string;
  /** CRIU's image directory (a host path), as pre-dump found it. */
  imageDir?: string;
  /** Hashes the page images while CRIU writes them (with the store), from pre-dump's end to post-dump. */
  hasher?: FollowingHasher;
}
