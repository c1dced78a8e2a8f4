// One page image's sha256, computed while CRIU still writes it: CRIU appends page images (auto-dedup stays off),
// so what was hashed stays what is there, and at post-dump only the last chunk is left to read.
import { createHash } from "node:crypto";
import { fstatSync, readSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

// The fd is opened by the daemon before CRIU's post-dump can move the file into the store, and closed by it.
const { fd, path, chunkBytes, flag } = workerData as {
  fd: number;
  path: string;
  chunkBytes: number;
  flag: SharedArrayBuffer;
};
const finish = new Int32Array(flag);
const hash = createHash("sha256");
const buffer = Buffer.allocUnsafe(chunkBytes);
let offset = 0;
let finishing = false;
for (;;) {
  const n = readSync(fd, buffer, 0, buffer.length, offset);
  if (n > 0) {
    hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
    offset += n;
    continue;
  }
  if (finishing) break;
  // Told CRIU is done: one more read to the end, then the digest.
  if (Atomics.load(finish, 0) === 1) {
    finishing = true;
    continue;
  }
  Atomics.wait(finish, 0, 0, 20);
}
const size = fstatSync(fd).size;
if (size !== offset)
  throw new Error(`${path} is ${size} bytes, ${offset} were hashed: it was not only appended to`);
parentPort?.postMessage({ sha256: hash.digest("hex"), size: offset });
