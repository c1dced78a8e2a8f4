import { Worker } from "node:worker_threads";

export interface FileDigest {
  sha256: string;
  size: number;
}

const CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * The sha256 of a file, read on a worker thread (several files hash in parallel, each on its own core, and a
 * 16 GiB file does not hold the daemon's event loop). Aborting the signal stops the worker at once.
 */
export function sha256File(path: string, signal?: AbortSignal): Promise<FileDigest> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const worker = new Worker(new URL("./hash-worker.js", import.meta.url), {
      workerData: { path, chunkBytes: CHUNK_BYTES },
    });
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      fn();
    };
    const onAbort = () => {
      void worker.terminate();
      settle(() => reject(abortError(signal)));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    worker.once("message", (digest: FileDigest) => settle(() => resolve(digest)));
    worker.once("error", (error) => settle(() => reject(error)));
    worker.once("exit", (code) =>
      settle(() => reject(new Error(`hashing ${path}: the worker exited (${code}) without a digest`))),
    );
  });
}

function abortError(signal: AbortSignal | undefined): Error {
  const reason = signal?.reason;
  return reason instanceof Error ? reason : new Error("hashing was cut short");
}
