// Reading a file that someone else may have put there (a checkpoint archive from a registry) without trusting
// it: a symlink could point at /dev/zero or a host secret, a FIFO would block a libuv thread for good.
import { constants, type Stats } from "node:fs";
import { lstat, open } from "node:fs/promises";

export type FileProblem = "missing" | "link" | "not-regular" | "too-large" | "unreadable";

/** Why a file was not read. The message names the path and the problem, never the file's content. */
export class FileRefused extends Error {
  override readonly name = "FileRefused";
  constructor(
    readonly path: string,
    readonly problem: FileProblem,
    message: string,
  ) {
    super(message);
  }
}

function kindOf(s: Stats): string {
  if (s.isFIFO()) return "FIFO";
  if (s.isCharacterDevice()) return "character device";
  if (s.isBlockDevice()) return "block device";
  if (s.isSocket()) return "socket";
  if (s.isDirectory()) return "directory";
  if (s.isSymbolicLink()) return "symbolic link";
  return "special file";
}

function refusedByOs(path: string, error: NodeJS.ErrnoException): FileRefused {
  if (error.code === "ENOENT" || error.code === "ENOTDIR")
    return new FileRefused(path, "missing", `${path} does not exist`);
  // A /proc/PID/fd/N path whose process is exiting: what it led to is gone with it (seen probing runc's fds).
  if (error.code === "ESRCH") return new FileRefused(path, "missing", `${path} is gone with its process`);
  if (error.code === "ELOOP")
    return new FileRefused(path, "link", `${path} is a symbolic link, which kybernate does not follow here`);
  return new FileRefused(path, "unreadable", `${path} cannot be read (${error.code ?? error.message})`);
}

/**
 * The whole content of a regular file of at most `maxBytes`, or a FileRefused. The last path component is
 * never followed (O_NOFOLLOW), nothing blocks (O_NONBLOCK: a FIFO opens at once and is refused), a device
 * node is refused before it is opened (opening some acts on the device), the fd is checked with fstat, and
 * the file is read with one read, so it cannot grow while it is read.
 */
export async function readSmallRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  const before = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    throw refusedByOs(path, error);
  });
  if (before.isSymbolicLink())
    throw new FileRefused(path, "link", `${path} is a symbolic link, which kybernate does not follow here`);
  if (!before.isFile())
    throw new FileRefused(path, "not-regular", `${path} is not a regular file (a ${kindOf(before)})`);
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY;
  const handle = await open(path, flags).catch((error: NodeJS.ErrnoException) => {
    throw refusedByOs(path, error);
  });
  try {
    const s = await handle.stat();
    if (!s.isFile())
      throw new FileRefused(path, "not-regular", `${path} is not a regular file (a ${kindOf(s)})`);
    if (s.size > maxBytes)
      throw new FileRefused(
        path,
        "too-large",
        `${path} is ${s.size} bytes, more than the ${maxBytes} allowed`,
      );
    const buffer = Buffer.alloc(Math.min(s.size, maxBytes) + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > maxBytes)
      throw new FileRefused(
        path,
        "too-large",
        `${path} grew beyond the ${maxBytes} bytes allowed while read`,
      );
    return buffer.subarray(0, bytesRead);
  } catch (error) {
    if (error instanceof FileRefused) throw error;
    throw refusedByOs(path, error as NodeJS.ErrnoException);
  } finally {
    await handle.close();
  }
}
