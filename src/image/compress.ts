import { spawn } from "node:child_process";
import { Duplex, type Transform } from "node:stream";
import * as zlib from "node:zlib";
import type { Compression } from "./oci.js";

/** The stream that compresses a layer, or undefined for an uncompressed one. */
export function compressor(compression: Compression, level?: number): Duplex | Transform | undefined {
  if (compression === "none") return undefined;
  if (compression === "gzip") return zlib.createGzip({ level: level ?? 1 });
  // Node 22.15+ has zstd in zlib; before that the zstd program does it, multi-threaded.
  const native = (zlib as unknown as Record<string, unknown>).createZstdCompress;
  if (typeof native === "function") return (native as () => Transform)();
  const child = spawn("zstd", ["-q", "-c", "-T0", `-${level ?? 3}`], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString("utf8").slice(0, 2000);
  });
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout });
  child.once("error", (err: NodeJS.ErrnoException) =>
    duplex.destroy(
      err.code === "ENOENT"
        ? new Error(
            "--compression zstd needs the zstd program on PATH (or Node 22.15+): install zstd or use gzip",
          )
        : err,
    ),
  );
  child.once("exit", (code, signal) => {
    if (code !== 0) duplex.destroy(new Error(`zstd exited with ${code ?? signal}: ${stderr.trim()}`));
  });
  return duplex;
}
