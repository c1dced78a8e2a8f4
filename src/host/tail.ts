import { constants } from "node:fs";
import { open } from "node:fs/promises";

/**
 * The last `bytes` of a regular file as text, or undefined when there is none to read (absent, not a regular
 * file). Opened without following a final symlink and without blocking, so a FIFO or device there costs nothing.
 */
export async function readTail(path: string, bytes: number): Promise<string | undefined> {
  const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(
    () => undefined,
  );
  if (!file) return undefined;
  try {
    const st = await file.stat();
    if (!st.isFile()) return undefined;
    const length = Math.min(bytes, st.size);
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await file.read(buffer, 0, length, st.size - length);
    return buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await file.close();
  }
}
