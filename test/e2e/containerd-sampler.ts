/**
 * containerd's own steps of a CRI CheckpointContainer, seen from outside by sampling its directories (every 200 ms):
 * CRIU's images in containerd's temp dir (`ctrd-checkpoint*`), the content store's ingest (`ingest/<ref>/data`,
 * then the blob's fsync and commit, when the ingest directory goes), the unpacked copy in the container's
 * `ctrd-checkpoint/` dir, and the archive at the request's location; plus each touched filesystem's used bytes,
 * for the peak extra disk the checkpoint took.
 */
import { type Dirent, readdirSync, statfsSync, statSync } from "node:fs";
import { join } from "node:path";

export interface Sample {
  t: number;
  temp: number;
  ingest: number;
  ingesting: boolean;
  unpacked: number;
  archive: number;
  store: number;
  /** Used bytes of each filesystem (by device), for the extra disk. */
  used: Record<string, number>;
}

export interface SampledPhases {
  /** ms from the call's start to the first and last growth of each. */
  criuImages?: Span;
  ingest?: Span;
  /** From the ingest's last growth to its directory's removal (the content store's fsync + commit). */
  ingestSync?: Span;
  unpack?: Span;
  export?: Span;
  /** The most bytes, summed over the touched filesystems, above what they held before the call. */
  peakExtraBytes: number;
}

export interface Span {
  fromMs: number;
  toMs: number;
  ms: number;
}

function treeBytes(dir: string): number {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  let sum = 0;
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) sum += treeBytes(p);
    else if (e.isFile()) sum += statSync(p, { throwIfNoEntry: false })?.size ?? 0;
  }
  return sum;
}

function childrenBytes(dir: string, prefix: string): number {
  let sum = 0;
  for (const name of safeList(dir)) if (name.startsWith(prefix)) sum += treeBytes(join(dir, name));
  return sum;
}

const safeList = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

export class ContainerdSampler {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private t0 = 0;
  private readonly baseline: Record<string, number>;
  private readonly filesystems: Map<string, string>;

  constructor(
    private readonly paths: {
      /** containerd's temp dir (CRIU's image dirs are made there). */
      temp: string;
      /** containerd's root. */
      root: string;
      containerId: string;
      archive: string;
      store?: string;
    },
    private readonly everyMs = 200,
  ) {
    this.filesystems = new Map();
    for (const p of [paths.temp, paths.root, paths.archive.replace(/\/[^/]*$/, ""), paths.store]) {
      if (!p) continue;
      const dev = String(statSync(p, { throwIfNoEntry: false })?.dev ?? "");
      if (dev && !this.filesystems.has(dev)) this.filesystems.set(dev, p);
    }
    this.baseline = this.used();
  }

  private used(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [dev, p] of this.filesystems) {
      const s = statfsSync(p);
      out[dev] = (Number(s.blocks) - Number(s.bfree)) * Number(s.bsize);
    }
    return out;
  }

  start(): void {
    this.t0 = performance.now();
    const content = join(this.paths.root, "io.containerd.content.v1.content", "ingest");
    const cri = join(
      this.paths.root,
      "io.containerd.grpc.v1.cri",
      "containers",
      this.paths.containerId,
      "ctrd-checkpoint",
    );
    const tick = () => {
      const ingestDirs = safeList(content);
      this.samples.push({
        t: performance.now() - this.t0,
        temp: childrenBytes(this.paths.temp, "ctrd-checkpoint"),
        ingest: ingestDirs.reduce(
          (s, d) => s + (statSync(join(content, d, "data"), { throwIfNoEntry: false })?.size ?? 0),
          0,
        ),
        ingesting: ingestDirs.length > 0,
        unpacked: treeBytes(join(cri, "checkpoint")),
        archive: statSync(this.paths.archive, { throwIfNoEntry: false })?.size ?? 0,
        store: this.paths.store ? treeBytes(this.paths.store) : 0,
        used: this.used(),
      });
      this.timer = setTimeout(tick, this.everyMs);
    };
    tick();
  }

  stop(): SampledPhases {
    clearTimeout(this.timer);
    const end = performance.now() - this.t0;
    const grow = (get: (s: Sample) => number): Span | undefined => {
      let from: number | undefined;
      let to: number | undefined;
      let last = 0;
      for (const s of this.samples) {
        const v = get(s);
        if (v > last) {
          from ??= s.t;
          to = s.t;
        }
        last = v;
      }
      return from === undefined || to === undefined ? undefined : { fromMs: from, toMs: to, ms: to - from };
    };
    const ingest = grow((s) => s.ingest);
    const ingestGone = ingest ? this.samples.find((s) => s.t > ingest.toMs && !s.ingesting)?.t : undefined;
    const exp = grow((s) => s.archive);
    const peakExtraBytes = Math.max(
      0,
      ...this.samples.map((s) =>
        Object.entries(s.used).reduce(
          (sum, [dev, used]) => sum + Math.max(0, used - (this.baseline[dev] ?? used)),
          0,
        ),
      ),
    );
    return {
      ...(grow((s) => s.temp) ? { criuImages: grow((s) => s.temp) } : {}),
      ...(ingest ? { ingest } : {}),
      ...(ingest && ingestGone
        ? { ingestSync: { fromMs: ingest.toMs, toMs: ingestGone, ms: ingestGone - ingest.toMs } }
        : {}),
      ...(grow((s) => s.unpacked) ? { unpack: grow((s) => s.unpacked) } : {}),
      ...(exp ? { export: { fromMs: exp.fromMs, toMs: end, ms: end - exp.fromMs } } : {}),
      peakExtraBytes,
    };
  }
}
