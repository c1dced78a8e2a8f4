/**
 * A node's GPUs as kybernate's daemon and CLI see them through nvidia-smi: a script printing the CSV that
 * `nvidia-smi --query-gpu=…` prints, rewritable between steps. Two nodes of one machine get different UUIDs of
 * the same model, so a restore on the other node goes through the driver's UUID device map.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

export const H200 = "NVIDIA H200";
export const UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444";
export const UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444";

export interface FakeGpus {
  nvidiaSmi: string;
  set(rows: Array<{ uuid: string; name?: string; memoryMiB?: number }>): void;
  /** The processes `--query-compute-apps` lists: which GPUs each host pid computes on. */
  setApps(rows: Array<{ pid: number; uuid: string; usedMiB?: number }>): void;
}

export function fakeGpus(dir: string, name: string, uuid: string): FakeGpus {
  const csv = join(dir, `${name}-gpus.csv`);
  const apps = join(dir, `${name}-apps.csv`);
  const nvidiaSmi = join(dir, `${name}-nvidia-smi`);
  writeFileSync(
    nvidiaSmi,
    `#!/bin/sh\ncase "$*" in *--query-gpu*) cat '${csv}' ;; *--query-compute-apps*) cat '${apps}' ;; *) ;; esac\n`,
    { mode: 0o755 },
  );
  writeFileSync(apps, "");
  const set: FakeGpus["set"] = (rows) =>
    writeFileSync(
      csv,
      rows
        .map((r, i) => `${i}, ${r.uuid}, ${r.name ?? H200}, ${r.memoryMiB ?? 143771}, 580.159.04, Enabled\n`)
        .join(""),
    );
  set([{ uuid }]);
  const setApps: FakeGpus["setApps"] = (rows) =>
    writeFileSync(apps, rows.map((r) => `${r.pid}, ${r.uuid}, ${r.usedMiB ?? 16}\n`).join(""));
  return { nvidiaSmi, set, setApps };
}
