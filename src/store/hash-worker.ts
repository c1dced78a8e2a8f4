// One file's sha256 on a thread of its own: the daemon's event loop keeps serving other containers meanwhile.
import { createHash } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

const { path, chunkBytes } = workerData as { path: string; chunkBytes: number };
const hash = createHash("sha256");
const buffer = Buffer.allocUnsafe(chunkBytes);
const fd = openSync(path, "r");
let size = 0;
try {
  for (;;) {
    const n = readSync(fd, buffer, 0, buffer.length, null);
    if (n === 0) break;
    hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
    size += n;
  }
  // A file that changed size while it was read is not the file that was hashed.
  const after = fstatSync(fd).size;
  if (after !== size) throw new Error(`${path} changed size while it was hashed (${size} → ${after} bytes)`);
} finally {
  closeSync(fd);
}
parentPort?.postMessage({ sha256: hash.digest("hex"), size });
