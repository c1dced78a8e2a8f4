// The CRIU action hook's process: kept to node's built-ins so it starts fast while the container is frozen.
import { askDaemon } from "../daemon/client.js";
import { requestFromEnvironment } from "./environment.js";

async function main(): Promise<number> {
  let request: ReturnType<typeof requestFromEnvironment>;
  try {
    request = requestFromEnvironment(process.env, process.ppid);
  } catch (error) {
    process.stderr.write(`kybernate hook: ${(error as Error).message}\n`);
    return 2;
  }
  const { action, containerId } = request.request;
  try {
    const reply = await askDaemon(request.socket, request.request, request.request.deadlineMs);
    if (reply.ok) return 0;
    process.stderr.write(`kybernate hook: ${action} of container ${containerId} failed: ${reply.error}\n`);
  } catch (error) {
    process.stderr.write(
      `kybernate hook: ${action} of container ${containerId} failed: ${(error as Error).message}\n`,
    );
  }
  return 1;
}

process.exitCode = await main();
