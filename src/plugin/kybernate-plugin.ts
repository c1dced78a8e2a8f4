import { containerIdProblem } from "../base/container-id.js";
import type { Logger } from "../base/log.js";
import { version } from "../base/version.js";
import type { NriContext, NriHandlers } from "../nri/handlers.js";
import type { Container, ContainerAdjustment, PodSandbox } from "../nri/types.js";
import {
  type CriuConfigOptions,
  containersWithCriuFiles,
  removeCriuFiles,
  writeCriuFiles,
} from "./criu-config.js";
import { classifyContainer } from "./gpu-container.js";
import type { Selector } from "./selector.js";
import { type CheckpointNetwork, type TcpMode, tcpChoice } from "./tcp-choice.js";

export const VERSION_ANNOTATION = "kybernate.io/version";
/** runc hands CRIU the file this OCI annotation names, for dump and for restore. */
export const CRIU_CONFIG_ANNOTATION = "org.criu.config";

export interface PluginOptions {
  criu: CriuConfigOptions;
  /** Extra opt-in: containers matching it are treated as GPU containers too. */
  selector?: Selector;
  log: Logger;
  /** Told of each container kybernate takes care of (for `kybernate ps`). */
  onManaged?(pod: PodSandbox, container: Container, reason: string, tcp?: TcpMode): void;
  onRemoved?(containerId: string): void;
  /** After each (re)synchronize: the GPU containers that still exist, with their init pids. */
  onSynchronized?(gpuContainers: Container[]): void;
  /** A restored container's checkpoint addresses (tests replace the archive reader). */
  readCheckpointNetwork?(container: Container): Promise<CheckpointNetwork | undefined>;
}

/**
 * kybernate's NRI handlers: a GPU container gets a CRIU configuration whose action script is the kybernate
 * hook; every other container passes untouched, at the cost of one classification. Only CreateContainer and
 * RemoveContainer are implemented, so only those are subscribed: each event is a call under containerd's
 * global NRI lock.
 */
export function kybernateHandlers(options: PluginOptions): NriHandlers {
  const { log } = options;
  return {
    async createContainer(
      pod: PodSandbox,
      container: Container,
      ctx: NriContext,
    ): Promise<ContainerAdjustment | undefined> {
      const verdict = classifyContainer(pod, container);
      const selected = options.selector?.matches(pod, container) ?? false;
      if (!verdict.gpu && !selected) return undefined;
      const reason = verdict.gpu ? verdict.reason : "selector";
      const problem = containerIdProblem(container.id);
      if (problem) {
        // Its id would become a directory name under the state dir: "..", ".", "a/b" must never get that far.
        log.warn(
          { pod: `${pod.namespace}/${pod.name}`, container: container.name, problem },
          "GPU container not configured: its id is unusable",
        );
        return undefined;
      }
      const tcp = await tcpChoice(pod, container, options.readCheckpointNetwork);
      const files = await writeCriuFiles(container.id, options.criu, tcp.mode);
      if (ctx.signal.aborted) {
        // The stub already answered "no adjustment": this container runs without the hook, so it is not ours.
        await removeCriuFiles(options.criu.stateDir, container.id);
        log.warn(
          { container: container.name, id: container.id, reason: String(ctx.signal.reason) },
          "GPU container created without the CRIU hook: the answer came too late",
        );
        return undefined;
      }
      log.info(
        {
          pod: `${pod.namespace}/${pod.name}`,
          container: container.name,
          id: container.id,
          reason,
          restored: container.annotations.restored === "true",
          tcp: tcp.mode,
          tcpReason: tcp.reason,
          ...(tcp.warning ? { tcpWarning: tcp.warning } : {}),
          networkLock: options.criu.networkLock || "criu's default",
        },
        "GPU container: CRIU hook configured",
      );
      options.onManaged?.(pod, container, reason, tcp.mode);
      return { annotations: { [VERSION_ANNOTATION]: version, [CRIU_CONFIG_ANNOTATION]: files.config } };
    },
    /**
     * After a (re)start: the GPU containers that still exist are managed again (their CRIU files were written
     * when they were created), and the files of containers removed while kybernate was away are deleted.
     */
    async synchronize(pods: PodSandbox[], containers: Container[]): Promise<void> {
      const podById = new Map(pods.map((pod) => [pod.id, pod]));
      const withFiles = new Set(await containersWithCriuFiles(options.criu.stateDir));
      const alive = new Set(containers.map((c) => c.id));
      const surviving = containers.filter((c) => withFiles.has(c.id));
      for (const container of surviving) {
        const pod = podById.get(container.podSandboxId);
        if (pod) options.onManaged?.(pod, container, "CRIU hook configured earlier");
      }
      options.onSynchronized?.(surviving);
      for (const id of withFiles) {
        if (!alive.has(id)) await removeCriuFiles(options.criu.stateDir, id);
      }
    },
    async removeContainer(_pod: PodSandbox, container: Container): Promise<void> {
      const problem = containerIdProblem(container.id);
      // No such id was ever configured; removing by it could only reach the state dir itself.
      if (problem)
        return void log.warn(
          { container: container.name, problem },
          "removal of an unusable container id ignored",
        );
      await removeCriuFiles(options.criu.stateDir, container.id);
      options.onRemoved?.(container.id);
    },
  };
}
