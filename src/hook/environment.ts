import { containerIdProblem } from "../base/container-id.js";
import { DEFAULT_DAEMON_SOCKET, HOOK_ACTIONS, type HookRequest } from "../daemon/protocol.js";

const ACTIONS = new Set<string>(HOOK_ACTIONS);

/** The hook's request, read from what CRIU and the per-container action script put in the environment. */
export function requestFromEnvironment(
  env: NodeJS.ProcessEnv,
  criuPid: number,
): { request: HookRequest; socket: string } {
  const action = env.CRTOOLS_SCRIPT_ACTION;
  if (!action) {
    throw new Error(
      "CRTOOLS_SCRIPT_ACTION is not set: this hook is run by CRIU as its action-script, not by hand",
    );
  }
  if (!ACTIONS.has(action))
    throw new Error(`CRTOOLS_SCRIPT_ACTION="${action}" is not an action kybernate handles`);
  const containerId = env.KYBERNATE_CONTAINER_ID ?? "";
  const problem = containerIdProblem(containerId);
  if (problem) {
    throw new Error(
      `KYBERNATE_CONTAINER_ID=${JSON.stringify(containerId.slice(0, 200))} is not a container id (${problem}): run the hook through the action script kybernate writes per container`,
    );
  }
  // At pre-restore no process exists yet: CRIU sets no init pid.
  const initPidText = action === "pre-restore" ? "0" : (env.CRTOOLS_INIT_PID ?? "");
  const initPid = Number(initPidText);
  if (action !== "pre-restore" && (!/^\d+$/.test(initPidText) || initPid <= 1)) {
    throw new Error(`CRTOOLS_INIT_PID="${initPidText}" is not a process id (CRIU sets it at ${action})`);
  }
  const deadlineText = env.KYBERNATE_HOOK_TIMEOUT_MS ?? "120000";
  const deadlineMs = Number(deadlineText);
  if (!Number.isInteger(deadlineMs) || deadlineMs < 1000) {
    throw new Error(
      `KYBERNATE_HOOK_TIMEOUT_MS="${deadlineText}" must be a whole number of milliseconds >= 1000`,
    );
  }
  return {
    socket: env.KYBERNATE_SOCKET || DEFAULT_DAEMON_SOCKET,
    request: {
      kind: "hook",
      action: action as HookRequest["action"],
      containerId,
      initPid,
      criuPid,
      imageDir: env.CRTOOLS_IMAGE_DIR || undefined,
      deadlineMs,
    },
  };
}
