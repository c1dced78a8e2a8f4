import { basename, dirname } from "node:path";
import type { Filesystem } from "../host/filesystems.js";

/**
 * What a checkpoint will write on each filesystem it touches, against the room there. containerd's CRI path
 * (containerd 2.1–2.3), in two steps: while containerd ingests CRIU's images into its content store, the temp dir
 * holds them (1×) and the content store its blob (1×); the temp dir is removed, then containerd unpacks the blob
 * into the container's `ctrd-checkpoint` dir (1×, beside the blob) and tars that to the request's location (1×).
 * One disk for all of it peaks at 3×. `ctr tasks checkpoint` has only the first step. With the page store (on the
 * temp dir's filesystem) the images are written once and renamed into the store, where they stay; containerd
 * copies only metadata.
 */
export type DiskStep = "ingest" | "export";

export interface DiskShare {
  fs: Filesystem;
  bytes: number;
  what: string;
  /** When the bytes are there: a filesystem needs the most any one step puts on it. */
  during: readonly DiskStep[];
}

export interface DiskPlanInput {
  containerId: string;
  /** Bytes CRIU will write (staged VRAM + the processes' memory), already with its margin. */
  imageBytes: number;
  /** CRIU's image directory (containerd's temp dir) as a host path. */
  imageDir: string;
  /** CRIU's log: runc puts it in its work dir, which CRI makes `<root>/…/containers/<id>/ctrd-checkpoint`. */
  criuLog?: string;
  /** containerd's root, for a checkpoint whose work dir does not show it (`ctr tasks checkpoint`). */
  containerdRoot: string;
  /** Where CRI archives go on this node (the kubelet's checkpoints dir), when known. */
  archiveDir?: string;
  /** The page store's directory, when kybernate runs with one and the container has not opted out. */
  storeDir?: string;
  filesystemOf: (path: string) => Promise<Filesystem>;
}

export type DiskPlan =
  | {
      ok: true;
      withStore: boolean;
      /** Why a configured store is not used for this checkpoint. */
      selfContainedBecause?: string;
      shares: DiskShare[];
    }
  | { ok: false; error: string; withStore: boolean; shares: DiskShare[] };

/** What containerd writes besides the page images: CRIU's other images, the specs, the logs. */
export const METADATA_BYTES = 64 * 1024 * 1024;

/** Each filesystem's worst step (by device: a bind mount is the same disk): the shares on it then, their bytes. */
function peaks(shares: readonly DiskShare[]): Array<{ fs: Filesystem; bytes: number; on: DiskShare[] }> {
  const byDev = new Map<bigint, DiskShare[]>();
  for (const s of shares) byDev.set(s.fs.dev, [...(byDev.get(s.fs.dev) ?? []), s]);
  return [...byDev.values()].map((list) => {
    const worst = (["ingest", "export"] as const)
      .map((step) => list.filter((s) => s.during.includes(step)))
      .map((on) => ({ on, bytes: on.reduce((sum, s) => sum + s.bytes, 0) }))
      .sort((x, y) => y.bytes - x.bytes)[0] ?? { on: [], bytes: 0 };
    return { fs: (list[0] as DiskShare).fs, ...worst };
  });
}

/** The most each filesystem holds at any one step, by mount point (what the refusal is decided on). */
export function peakNeeds(shares: readonly DiskShare[]): Map<string, number> {
  return new Map(peaks(shares).map((p) => [p.fs.mountPoint, p.bytes]));
}

export function size(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `${Math.max(1, Math.round(bytes / 2 ** 20))} MiB`;
}

export async function planDisk(input: DiskPlanInput): Promise<DiskPlan> {
  const temp = await input.filesystemOf(input.imageDir);
  const workDir = input.criuLog ? dirname(input.criuLog) : undefined;
  const cri = workDir !== undefined && basename(workDir) === "ctrd-checkpoint" && workDir !== input.imageDir;
  const root = await input.filesystemOf(cri && workDir ? workDir : input.containerdRoot);
  const archive = cri ? await input.filesystemOf(input.archiveDir ?? (workDir as string)) : undefined;
  let withStore = false;
  let selfContainedBecause: string | undefined;
  if (input.storeDir) {
    const store = await input.filesystemOf(input.storeDir);
    if (store.dev === temp.dev) withStore = true;
    else
      selfContainedBecause = `the page store ${input.storeDir} is on another filesystem (${store.mountPoint}) than containerd's temp dir ${dirname(input.imageDir)} (${temp.mountPoint}), so the page images cannot move by a rename`;
  }
  const image = input.imageBytes;
  const both: DiskStep[] = ["ingest", "export"];
  const shares: DiskShare[] = withStore
    ? [
        {
          fs: temp,
          bytes: image,
          what: `CRIU's images, moved into the page store ${input.storeDir}`,
          during: both,
        },
        { fs: root, bytes: METADATA_BYTES, what: "containerd's copies of the metadata", during: both },
        ...(archive
          ? [
              {
                fs: archive,
                bytes: METADATA_BYTES,
                what: "the archive (metadata only)",
                during: ["export"] as DiskStep[],
              },
            ]
          : []),
      ]
    : [
        {
          fs: temp,
          bytes: image,
          what: `CRIU's images in containerd's temp dir ${dirname(input.imageDir)}`,
          during: ["ingest"],
        },
        { fs: root, bytes: image, what: "containerd's content store", during: both },
        ...(cri && archive
          ? [
              {
                fs: root,
                bytes: image,
                what: `the unpacked copy under ${root.mountPoint === "/" ? "containerd's root" : root.mountPoint}`,
                during: ["export"] as DiskStep[],
              },
              { fs: archive, bytes: image, what: "the archive", during: ["export"] as DiskStep[] },
            ]
          : []),
      ];
  for (const step of peaks(shares)) {
    const { fs } = step;
    if (step.bytes <= fs.freeBytes) continue;
    const need = step.bytes;
    const parts = step.on.map((s) => `${size(s.bytes)} for ${s.what}`).join(", ");
    const fix = withStore
      ? "free space there"
      : input.storeDir
        ? `free space there (${selfContainedBecause ?? "this container opted out of the page store"})`
        : `free space there, or run kybernate with --page-store DIR on the filesystem of containerd's temp dir (then ≈ 1× the image, ${size(image)}, on ${temp.mountPoint})`;
    return {
      ok: false,
      withStore,
      shares,
      error: `disk admission refused the checkpoint of container ${input.containerId}: at its peak it needs ${size(need)} on the filesystem mounted at ${fs.mountPoint} (${fs.source}, ${fs.type}) — ${parts} — but ${size(fs.freeBytes)} is free there; nothing was frozen or locked, the container keeps running. ${capitalise(fix)}`,
    };
  }
  return { ok: true, withStore, ...(selfContainedBecause ? { selfContainedBecause } : {}), shares };
}

const capitalise = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
