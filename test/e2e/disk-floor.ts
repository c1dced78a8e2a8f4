/**
 * The node floor's disk part, measured in the same run as the checkpoints it is compared with: one sequential
 * write of N GiB with an fsync at the end (what CRIU's dump plus the page store's fsync do), then one sequential
 * read of it with O_DIRECT (dd), after dropping it from the page cache (dd's nocache: posix_fadvise DONTNEED).
 * The data is random and changes from block to block, so no compressing or deduplicating layer flatters it.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";

export interface DiskBandwidth {
  dir: string;
  bytes: number;
  /** bytes / s of write + fsync. */
  writeBps: number;
  /** bytes / s of an O_DIRECT read. */
  readBps: number;
  writeMs: number;
  readMs: number;
}

const CHUNK = 16 * 1024 * 1024;

export function measureDisk(dir: string, gib: number): DiskBandwidth {
  const path = join(dir, `kybernate-disk-floor-${process.pid}.bin`);
  const bytes = Math.round(gib * 2 ** 30);
  const blocks = [randomBytes(CHUNK), randomBytes(CHUNK), randomBytes(CHUNK)];
  try {
    const t0 = performance.now();
    const fd = openSync(path, "w", 0o600);
    try {
      for (let done = 0, i = 0; done < bytes; done += CHUNK, i++) {
        const block = blocks[i % blocks.length] as Buffer;
        block.writeUInt32LE(i, 0);
        writeSync(fd, block, 0, Math.min(CHUNK, bytes - done));
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const writeMs = performance.now() - t0;
    execFileSync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
    const t1 = performance.now();
    execFileSync("dd", [`if=${path}`, "of=/dev/null", "bs=16M", "iflag=direct", "status=none"]);
    const readMs = performance.now() - t1;
    return {
      dir,
      bytes,
      writeBps: (bytes / writeMs) * 1000,
      readBps: (bytes / readMs) * 1000,
      writeMs,
      readMs,
    };
  } finally {
    rmSync(path, { force: true });
  }
}

/** Drops files from the page cache (dd nocache), so that a restore reads them from the disk as a cold node would. */
export function evict(paths: readonly string[]): void {
  for (const p of paths) execFileSync("dd", [`if=${p}`, "iflag=nocache", "count=0", "status=none"]);
}

export const gbps = (bps: number): string => `${(bps / 1e9).toFixed(2)} GB/s`;
