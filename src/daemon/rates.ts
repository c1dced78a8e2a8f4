import { open, readFile, rename } from "node:fs/promises";

/**
 * The rates this node's checkpoints ran at (bytes per second), kept across restarts, for the deadline estimate:
 * the GPU freeze (VRAM moved), CRIU's dump (image written), and the rest of containerd's call, self-contained
 * (containerd copies the image into its content store, unpacks and tars it again) or with the page store (the
 * store's hashing and fsync, then metadata). Each new measurement moves a rate halfway towards it.
 */
export interface Rates {
  gpuFreeze: number;
  criuDump: number;
  restSelfContained: number;
  restWithStore: number;
  /** How many checkpoints measured each; 0: the default below (from the H200). */
  measured: Partial<Record<keyof Omit<Rates, "measured">, number>>;
}

const GB = 1e9;

/**
 * Before anything is measured here: the one-GPU H200's figures (docs/BENCHMARKS.md), 16 GiB: freeze 2.0 GB/s,
 * CRIU 1.8 GB/s into the page cache, containerd's self-contained path ≈ 0.25 GB/s end to end (ingest, fsync, untar
 * and export), the store's hash + fsync ≈ 1.0 GB/s.
 */
export const DEFAULT_RATES: Rates = {
  gpuFreeze: 2.0 * GB,
  criuDump: 1.8 * GB,
  restSelfContained: 0.25 * GB,
  restWithStore: 1.0 * GB,
  measured: {},
};

/**
 * containerd's untar and export tar run after it resumes the container, where kybernate does not see them; on
 * the H200 they took 0.6 × the time from CRIU's end to the resume (11 of 19 s at 8 GiB). Added to the estimate of
 * a self-contained checkpoint.
 */
export const AFTER_RESUME_FACTOR = 0.6;

export class RateBook {
  private rates: Rates = { ...DEFAULT_RATES, measured: {} };

  constructor(private readonly path?: string) {}

  async load(): Promise<void> {
    if (!this.path) return;
    try {
      const v = JSON.parse(await readFile(this.path, "utf8")) as Partial<Rates>;
      for (const key of ["gpuFreeze", "criuDump", "restSelfContained", "restWithStore"] as const) {
        const r = v[key];
        if (typeof r === "number" && r > 0 && Number.isFinite(r)) this.rates[key] = r;
      }
      if (v.measured && typeof v.measured === "object") this.rates.measured = { ...v.measured };
    } catch {
      // None yet, or unreadable: the defaults hold until the next checkpoint measures.
    }
  }

  get current(): Rates {
    return this.rates;
  }

  /** One checkpoint's measurement of `key`: `bytes` in `ms`. Ignored when either is missing or implausible. */
  observe(key: keyof Omit<Rates, "measured">, bytes: number | undefined, ms: number | undefined): void {
    if (!bytes || !ms || bytes < 64 * 1024 * 1024 || ms < 50) return;
    const rate = (bytes / ms) * 1000;
    const n = this.rates.measured[key] ?? 0;
    this.rates[key] = n === 0 ? rate : (this.rates[key] + rate) / 2;
    this.rates.measured[key] = n + 1;
  }

  async save(): Promise<void> {
    if (!this.path) return;
    const temporary = `${this.path}.tmp`;
    const file = await open(temporary, "w", 0o600);
    try {
      await file.writeFile(`${JSON.stringify(this.rates)}\n`);
    } finally {
      await file.close();
    }
    await rename(temporary, this.path);
  }
}

export interface CheckpointEstimate {
  ms: number;
  parts: { gpuFreeze: number; criuDump: number; rest: number };
  /** Whether any rate came from this node (else all are the defaults). */
  measuredHere: boolean;
}

/** How long a checkpoint moving `vramBytes` and writing an image of `imageBytes` should take here. */
export function estimateCheckpoint(
  rates: Rates,
  o: { vramBytes: number; imageBytes: number; withStore: boolean },
): CheckpointEstimate {
  const gpuFreeze = (o.vramBytes / rates.gpuFreeze) * 1000;
  const criuDump = (o.imageBytes / rates.criuDump) * 1000;
  const rest = o.withStore
    ? (o.imageBytes / rates.restWithStore) * 1000
    : (o.imageBytes / rates.restSelfContained) * 1000;
  return {
    ms: gpuFreeze + criuDump + rest,
    parts: { gpuFreeze, criuDump, rest },
    measuredHere: Object.values(rates.measured).some((n) => (n ?? 0) > 0),
  };
}
