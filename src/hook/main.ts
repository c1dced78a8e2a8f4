// The CRIU action hook's process: kept to node's built-ins so it starts fast while the container is frozen.
import { askDaemon } from "../daemon/client.js";
import { ProcessCgroups } from "../host/cgroup.js";
import { requestFromEnvironment } from "./environment.js";

async function main(): Promise<number> {
  let request: ReturnType<typeof requestFromEnvironment>;
  try {
    request = requestFromEnvironment(process.env, process.ppid);
  } catch (error) {
    process.stderr.write(`kybernate hook: ${(error as Error).message}\n`);
    return 2;
  }
  const { action, containerId, initPid } = request.request;
  // containerd paused the container before CRIU; if the daemon dies after thawing it, containerd's resume
  // would fail and leave the container marked paused for good. So the hook puts the freezer back itself.
  const freezer =
    action === "pre-dump"
      ? await ProcessCgroups.ofPid(initPid)
          .then((cgroups) => cgroups.freezer())
          .catch(() => undefined)
      : undefined;
  const frozenAtStart = (await freezer?.isFrozen().catch(() => false)) ?? false;
  let failure: string;
  try {
    const reply = await askDaemon(request.socket, request.request, request.request.deadlineMs);
    if (reply.ok) return 0;
    failure = reply.error ?? "no reason given";
  } catch (error) {
    failure = (error as Error).message;
  }
  if (freezer && frozenAtStart && !(await freezer.isFrozen().catch(() => true))) {
    await freezer.freeze().catch((error: Error) => {
      failure += `; and the container could not be frozen again for containerd's resume: ${error.message}`;
    });
  }
  process.stderr.write(`kybernate hook: ${action} of container ${containerId} failed: ${failure}\n`);
  return 1;
}

process.exitCode = await main();
