import { randomUUID } from "node:crypto";
import { isAbsolute } from "node:path";
import {
  type Client,
  credentials,
  loadPackageDefinition,
  Metadata,
  type ServiceClientConstructor,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { type Logger, silentLogger } from "../base/log.js";
import { protoDir } from "../base/paths.js";
import { CriError } from "./errors.js";
import type {
  AuthConfig,
  Container,
  ContainerFilter,
  ContainerStatusResponse,
  CriRpcName,
  CriRpcs,
  In,
  MountPropagation,
  PodSandbox,
  PodSandboxConfig,
  PodSandboxFilter,
  PodSandboxStatusResponse,
  StringMap,
  VersionResponse,
} from "./types.js";

export const DEFAULT_CRI_SOCKET = "/run/containerd/containerd.sock";
/** Deadline for quick calls (status, list, create, start, remove). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Added to a timeout the runtime enforces itself, so the runtime's own error reaches us first. */
export const RUNTIME_TIMEOUT_MARGIN_MS = 10_000;
const MAX_MESSAGE_BYTES = 32 * 1024 * 1024;
/** Pulls move whole images (a checkpoint image holds the process's memory); the kubelet gives them no deadline. */
export const PULL_TIMEOUT_MS = 30 * 60_000;

export interface CriClientOptions {
  /** Deadline for calls without a timeout of their own (ms). */
  timeoutMs?: number;
  logger?: Logger;
}

export interface CallOptions {
  /** Overrides the call's deadline (ms). */
  timeoutMs?: number;
}

export interface PodOptions {
  annotations?: StringMap;
  labels?: StringMap;
  /** Defaults to a random UUID, as kubelet passes the pod's UID. */
  uid?: string;
  /** Where the runtime writes container logs (ContainerSpec.logPath is relative to it). */
  logDirectory?: string;
}

export interface RunningPod {
  podId: string;
  /** The config the sandbox was created with: CreateContainer wants it again. */
  config: In<PodSandboxConfig>;
}

export interface MountSpec {
  containerPath: string;
  hostPath: string;
  readonly?: boolean;
  /** Default private, as the kubelet sends a volume mount without mountPropagation. */
  propagation?: MountPropagation;
}

export interface DeviceSpec {
  containerPath: string;
  hostPath: string;
  /** cgroup device permissions; default "rwm". */
  permissions?: string;
}

export interface ContainerSpec {
  name: string;
  /** What the runtime resolves: a reference, an image id, or a checkpoint archive's path. */
  image: string;
  /** The reference as the user wrote it (the kubelet sends the pod spec's `image` here, the resolved id above). */
  userSpecifiedImage?: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: StringMap;
  mounts?: MountSpec[];
  devices?: DeviceSpec[];
  /** Fully qualified CDI names, e.g. "nvidia.com/gpu=0". */
  cdiDevices?: string[];
  annotations?: StringMap;
  labels?: StringMap;
  /** Relative to the pod's logDirectory; ignored by the runtime when the pod has none. */
  logPath?: string;
  privileged?: boolean;
  /** The container's memory limit (the kubelet's resources.limits.memory). */
  memoryLimitBytes?: number;
}

type Unary = (
  req: unknown,
  meta: Metadata,
  opts: { deadline: number },
  cb: (err: ServiceError | null, res: unknown) => void,
) => void;

/**
 * A typed promise-based client for the CRI runtime.v1 RuntimeService and ImageService on a unix socket.
 * Every call has a deadline; every failure is a CriError naming the call and the socket.
 */
export class CriClient {
  readonly address: string;
  private readonly runtime: Client;
  private readonly image: Client;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(socket: string = DEFAULT_CRI_SOCKET, options: CriClientOptions = {}) {
    this.address = criAddress(socket);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.log = (options.logger ?? silentLogger).child({ component: "cri", socket: this.address });
    const v1 = criPackage();
    const channelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    };
    this.runtime = new v1.RuntimeService(this.address, credentials.createInsecure(), channelOptions);
    this.image = new v1.ImageService(this.address, credentials.createInsecure(), {
      ...channelOptions,
      channelOverride: this.runtime.getChannel(),
    });
  }

  close(): void {
    this.image.close();
    this.runtime.close();
  }

  /** Any declared RPC, by its proto name, with a typed request and response. */
  rpc<N extends CriRpcName>(
    name: N,
    request: In<CriRpcs[N]["req"]>,
    opts: CallOptions = {},
  ): Promise<CriRpcs[N]["res"]> {
    const service = RPC_SERVICE[name];
    const client = service === "ImageService" ? this.image : this.runtime;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const method = (client as unknown as Record<string, Unary>)[name];
    if (typeof method !== "function") {
      return Promise.reject(
        new Error(
          `kybernate: ${name} is missing from proto/cri/api.proto's ${service}; reinstall the package`,
        ),
      );
    }
    const started = Date.now();
    return new Promise((resolve, reject) => {
      method.call(client, request, new Metadata(), { deadline: started + timeoutMs }, (err, res) => {
        const ms = Date.now() - started;
        if (err) {
          this.log.debug({ call: name, ms, code: err.code, details: err.details }, "CRI call failed");
          reject(
            new CriError(
              name,
              this.address,
              err.code ?? status.UNKNOWN,
              err.details ?? err.message,
              timeoutMs,
            ),
          );
          return;
        }
        this.log.debug({ call: name, ms }, "CRI call");
        resolve(res as CriRpcs[N]["res"]);
      });
    });
  }

  // ---- runtime ----

  version(opts?: CallOptions): Promise<VersionResponse> {
    return this.rpc("Version", { version: "v1" }, opts);
  }

  async runPodSandbox(
    config: In<PodSandboxConfig>,
    runtimeHandler = "",
    opts?: CallOptions,
  ): Promise<string> {
    return (await this.rpc("RunPodSandbox", { config, runtimeHandler }, opts)).podSandboxId;
  }

  /**
   * A pod in the node's network namespace (kubelet's hostNetwork): no CNI needed. Sets no hostname,
   * because a host-network sandbox with one fails in some runtimes (seen with containerd 2.1 in a VM).
   */
  async runHostNetworkPod(name: string, namespace: string, options: PodOptions = {}): Promise<RunningPod> {
    const config: In<PodSandboxConfig> = {
      metadata: { name, namespace, uid: options.uid ?? randomUUID(), attempt: 0 },
      labels: options.labels ?? {},
      annotations: options.annotations ?? {},
      logDirectory: options.logDirectory ?? "",
      linux: { securityContext: { namespaceOptions: hostNetworkNamespaces() } },
    };
    const podId = await this.runPodSandbox(config);
    return { podId, config };
  }

  async stopPodSandbox(podId: string, opts?: CallOptions): Promise<void> {
    await this.rpc("StopPodSandbox", { podSandboxId: podId }, opts);
  }

  async removePodSandbox(podId: string, opts?: CallOptions): Promise<void> {
    await this.rpc("RemovePodSandbox", { podSandboxId: podId }, opts);
  }

  /** Stops the pod (its containers get killed) and removes it with its containers; as kubelet does. */
  async stopAndRemovePod(podId: string, opts?: CallOptions): Promise<void> {
    await this.stopPodSandbox(podId, opts);
    await this.removePodSandbox(podId, opts);
  }

  podSandboxStatus(podId: string, verbose = false, opts?: CallOptions): Promise<PodSandboxStatusResponse> {
    return this.rpc("PodSandboxStatus", { podSandboxId: podId, verbose }, opts);
  }

  async listPodSandbox(filter?: In<PodSandboxFilter>, opts?: CallOptions): Promise<PodSandbox[]> {
    return (await this.rpc("ListPodSandbox", { filter: filter ?? {} }, opts)).items;
  }

  /** CreateContainer (not started) in a pod made with `podConfig`; returns the container id. */
  async createContainer(
    podId: string,
    podConfig: In<PodSandboxConfig>,
    spec: ContainerSpec,
    opts?: CallOptions,
  ): Promise<string> {
    const res = await this.rpc(
      "CreateContainer",
      {
        podSandboxId: podId,
        sandboxConfig: podConfig,
        config: {
          metadata: { name: spec.name, attempt: 0 },
          // As the kubelet sends it; a restore's annotation checkpointImage names the archive from it.
          image: { image: spec.image, userSpecifiedImage: spec.userSpecifiedImage ?? spec.image },
          command: spec.command ?? [],
          args: spec.args ?? [],
          workingDir: spec.workingDir ?? "",
          envs: Object.entries(spec.env ?? {}).map(([key, value]) => ({
            key,
            value: Buffer.from(value, "utf8"),
          })),
          mounts: (spec.mounts ?? []).map((m) => ({
            containerPath: m.containerPath,
            hostPath: m.hostPath,
            readonly: m.readonly ?? false,
            ...(m.propagation ? { propagation: m.propagation } : {}),
          })),
          devices: (spec.devices ?? []).map((d) => ({
            containerPath: d.containerPath,
            hostPath: d.hostPath,
            permissions: d.permissions ?? "rwm",
          })),
          CDIDevices: (spec.cdiDevices ?? []).map((name) => ({ name })),
          labels: spec.labels ?? {},
          annotations: spec.annotations ?? {},
          logPath: spec.logPath ?? "",
          linux: {
            ...(spec.memoryLimitBytes !== undefined
              ? { resources: { memoryLimitInBytes: String(spec.memoryLimitBytes) } }
              : {}),
            securityContext: {
              privileged: spec.privileged ?? false,
              namespaceOptions: podNamespaces(podConfig),
            },
          },
        },
      },
      opts,
    );
    return res.containerId;
  }

  /**
   * Restore through CRI: CreateContainer whose image is the checkpoint archive's path (containerd
   * 2.1–2.3; 2.2.7+/2.3.4+ only with enable_experimental_restore_via_create). containerd takes the processes, base image and annotations from the archive, but
   * mounts, devices and environment from THIS request (as the kubelet does from the pod spec), so pass the
   * original container's. Only creates: the following StartContainer is what runs `runc restore`.
   */
  async restoreFromArchive(
    podId: string,
    podConfig: In<PodSandboxConfig>,
    archivePath: string,
    name: string,
    options: Omit<ContainerSpec, "name" | "image" | "command" | "args" | "workingDir"> = {},
    opts?: CallOptions,
  ): Promise<string> {
    if (!isAbsolute(archivePath)) {
      throw new Error(
        `kybernate: checkpoint archive path must be absolute (the runtime resolves it): ${archivePath}`,
      );
    }
    return this.createContainer(podId, podConfig, { ...options, name, image: archivePath }, opts);
  }

  /**
   * PullImage, as the kubelet does before it creates a container from an image (a checkpoint image included);
   * returns the image id the runtime resolved, which the kubelet then names in CreateContainer.
   */
  async pullImage(
    image: string,
    options: { auth?: In<AuthConfig>; podConfig?: In<PodSandboxConfig>; timeoutMs?: number } = {},
  ): Promise<string> {
    const res = await this.rpc(
      "PullImage",
      { image: { image }, auth: options.auth, sandboxConfig: options.podConfig },
      { timeoutMs: options.timeoutMs ?? PULL_TIMEOUT_MS },
    );
    return res.imageRef;
  }

  async startContainer(containerId: string, opts?: CallOptions): Promise<void> {
    await this.rpc("StartContainer", { containerId }, opts);
  }

  async removeContainer(containerId: string, opts?: CallOptions): Promise<void> {
    await this.rpc("RemoveContainer", { containerId }, opts);
  }

  async listContainers(filter?: In<ContainerFilter>, opts?: CallOptions): Promise<Container[]> {
    return (await this.rpc("ListContainers", { filter: filter ?? {} }, opts)).containers;
  }

  containerStatus(
    containerId: string,
    verbose = false,
    opts?: CallOptions,
  ): Promise<ContainerStatusResponse> {
    return this.rpc("ContainerStatus", { containerId, verbose }, opts);
  }

  /**
   * CheckpointContainer to a tar at `location` (absolute path on the node). `timeoutS` is sent to the runtime
   * and, plus a margin, is the client's deadline: containerd 2.1.9 ignores the field, and a client that gives
   * up early can leave the task paused in containerd (its deferred resume runs with the expired context), so pass what the checkpoint really needs.
   */
  async checkpoint(containerId: string, location: string, timeoutS: number): Promise<void> {
    if (!isAbsolute(location)) {
      throw new Error(`kybernate: checkpoint location must be an absolute path on the node: ${location}`);
    }
    if (!(timeoutS > 0))
      throw new Error(`kybernate: checkpoint timeout must be > 0 seconds, got ${timeoutS}`);
    await this.rpc(
      "CheckpointContainer",
      { containerId, location, timeout: Math.ceil(timeoutS) },
      { timeoutMs: timeoutS * 1000 + RUNTIME_TIMEOUT_MARGIN_MS },
    );
  }
}

/** Which CRI service serves each call the client makes (checked against proto/cri/api.proto by a test). */
export const RPC_SERVICE: { [N in CriRpcName]: CriRpcs[N]["service"] } = {
  Version: "RuntimeService",
  RunPodSandbox: "RuntimeService",
  StopPodSandbox: "RuntimeService",
  RemovePodSandbox: "RuntimeService",
  PodSandboxStatus: "RuntimeService",
  ListPodSandbox: "RuntimeService",
  CreateContainer: "RuntimeService",
  StartContainer: "RuntimeService",
  RemoveContainer: "RuntimeService",
  ListContainers: "RuntimeService",
  ContainerStatus: "RuntimeService",
  ExecSync: "RuntimeService",
  CheckpointContainer: "RuntimeService",
  ImageStatus: "ImageService",
  PullImage: "ImageService",
};

/** "unix:///abs/path" from a bare path or an address that already has the scheme. */
export function criAddress(socket: string): string {
  const path = socket.startsWith("unix://") ? socket.slice("unix://".length) : socket;
  if (!isAbsolute(path)) {
    throw new Error(
      `kybernate: the CRI socket must be an absolute path (e.g. ${DEFAULT_CRI_SOCKET}), got "${socket}"`,
    );
  }
  return `unix://${path}`;
}

/** kubelet's namespaces for a hostNetwork pod: node network, the pod's own IPC, a pid namespace per container. */
function hostNetworkNamespaces() {
  return { network: "NODE", pid: "CONTAINER", ipc: "POD" } as const;
}

/** Containers repeat their pod's namespace modes, as kubelet sends them. */
function podNamespaces(podConfig: In<PodSandboxConfig>) {
  return podConfig.linux?.securityContext?.namespaceOptions ?? { pid: "CONTAINER" as const };
}

let cached: { RuntimeService: ServiceClientConstructor; ImageService: ServiceClientConstructor } | undefined;

function criPackage() {
  if (!cached) {
    const definition = loadSync("cri/api.proto", {
      includeDirs: [protoDir],
      keepCase: false,
      longs: String,
      enums: String,
      defaults: true,
    });
    // biome-ignore lint/suspicious/noExplicitAny: loadPackageDefinition returns an untyped namespace tree.
    const v1 = (loadPackageDefinition(definition) as any).runtime.v1;
    cached = { RuntimeService: v1.RuntimeService, ImageService: v1.ImageService };
  }
  return cached;
}
