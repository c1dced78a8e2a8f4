// TypeScript shapes of the runtime.v1 messages in proto/cri/api.proto, as @grpc/proto-loader hands them
// over with the options in client.ts: camelCase names, int64 as decimal strings (nanosecond timestamps do
// not fit a JS number), enums as their names, bytes as Buffers, absent scalars/lists/maps filled with
// defaults, absent sub-messages as null.
//
// Requests take the same shapes with every field optional (see `In<T>`); int64 fields also accept numbers.
// A `bytes` field given a string is base64-DECODED by protobufjs, so pass Buffers (the helpers do).

/** A request-side view of a message: every field optional, recursively; int64 strings also take numbers. */
export type In<T> = T extends Buffer
  ? Buffer | Uint8Array
  : T extends string
    ? T | number
    : T extends (infer U)[]
      ? In<U>[]
      : T extends object
        ? { [K in keyof T]?: In<NonNullable<T[K]>> }
        : T;

export type Int64 = string;
export type StringMap = Record<string, string>;

export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";
export type MountPropagation =
  | "PROPAGATION_PRIVATE"
  | "PROPAGATION_HOST_TO_CONTAINER"
  | "PROPAGATION_BIDIRECTIONAL";
export type Protocol = "TCP" | "UDP" | "SCTP";
export type PodSandboxState = "SANDBOX_READY" | "SANDBOX_NOTREADY";
export type ContainerState =
  | "CONTAINER_CREATED"
  | "CONTAINER_RUNNING"
  | "CONTAINER_EXITED"
  | "CONTAINER_UNKNOWN";
export type ProfileType = "RuntimeDefault" | "Unconfined" | "Localhost";

export interface VersionRequest {
  version: string;
}
export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface DNSConfig {
  servers: string[];
  searches: string[];
  options: string[];
}
export interface PortMapping {
  protocol: Protocol;
  containerPort: number;
  hostPort: number;
  hostIp: string;
}
export interface Mount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
  selinuxRelabel: boolean;
  propagation: MountPropagation;
  recursiveReadOnly: boolean;
}
export interface NamespaceOption {
  network: NamespaceMode;
  pid: NamespaceMode;
  ipc: NamespaceMode;
  targetId: string;
}
export interface Int64Value {
  value: Int64;
}
export interface SELinuxOption {
  user: string;
  role: string;
  type: string;
  level: string;
}
export interface SecurityProfile {
  profileType: ProfileType;
  localhostRef: string;
}
export interface Capability {
  addCapabilities: string[];
  dropCapabilities: string[];
  addAmbientCapabilities: string[];
}
export interface HugepageLimit {
  pageSize: string;
  limit: Int64;
}
export interface LinuxContainerResources {
  cpuPeriod: Int64;
  cpuQuota: Int64;
  cpuShares: Int64;
  memoryLimitInBytes: Int64;
  oomScoreAdj: Int64;
  cpusetCpus: string;
  cpusetMems: string;
  hugepageLimits: HugepageLimit[];
  unified: StringMap;
  memorySwapLimitInBytes: Int64;
}
export interface ImageSpec {
  image: string;
  annotations: StringMap;
  userSpecifiedImage: string;
}
export interface KeyValue {
  key: string;
  value: Buffer;
}

export interface LinuxSandboxSecurityContext {
  namespaceOptions: NamespaceOption | null;
  selinuxOptions: SELinuxOption | null;
  runAsUser: Int64Value | null;
  readonlyRootfs: boolean;
  supplementalGroups: Int64[];
  privileged: boolean;
  runAsGroup: Int64Value | null;
  seccomp: SecurityProfile | null;
  apparmor: SecurityProfile | null;
}
export interface LinuxPodSandboxConfig {
  cgroupParent: string;
  securityContext: LinuxSandboxSecurityContext | null;
  sysctls: StringMap;
  overhead: LinuxContainerResources | null;
  resources: LinuxContainerResources | null;
}
export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata | null;
  hostname: string;
  logDirectory: string;
  dnsConfig: DNSConfig | null;
  portMappings: PortMapping[];
  labels: StringMap;
  annotations: StringMap;
  linux: LinuxPodSandboxConfig | null;
}
export interface RunPodSandboxRequest {
  config: PodSandboxConfig | null;
  runtimeHandler: string;
}
export interface RunPodSandboxResponse {
  podSandboxId: string;
}
export interface StopPodSandboxRequest {
  podSandboxId: string;
}
export interface RemovePodSandboxRequest {
  podSandboxId: string;
}
export interface PodSandboxStatusRequest {
  podSandboxId: string;
  verbose: boolean;
}
export interface PodSandboxNetworkStatus {
  ip: string;
  additionalIps: { ip: string }[];
}
export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  createdAt: Int64;
  network: PodSandboxNetworkStatus | null;
  linux: { namespaces: { options: NamespaceOption | null } | null } | null;
  labels: StringMap;
  annotations: StringMap;
  runtimeHandler: string;
}
export interface PodSandboxStatusResponse {
  status: PodSandboxStatus | null;
  /** Verbose only: JSON strings keyed by topic ("info"). */
  info: StringMap;
  containersStatuses: ContainerStatus[];
  timestamp: Int64;
}
export interface PodSandboxFilter {
  id: string;
  state: { state: PodSandboxState } | null;
  labelSelector: StringMap;
}
export interface ListPodSandboxRequest {
  filter: PodSandboxFilter | null;
}
export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  createdAt: Int64;
  labels: StringMap;
  annotations: StringMap;
  runtimeHandler: string;
}
export interface ListPodSandboxResponse {
  items: PodSandbox[];
}

export interface LinuxContainerSecurityContext {
  capabilities: Capability | null;
  privileged: boolean;
  namespaceOptions: NamespaceOption | null;
  selinuxOptions: SELinuxOption | null;
  runAsUser: Int64Value | null;
  runAsUsername: string;
  readonlyRootfs: boolean;
  supplementalGroups: Int64[];
  noNewPrivs: boolean;
  runAsGroup: Int64Value | null;
  maskedPaths: string[];
  readonlyPaths: string[];
  seccomp: SecurityProfile | null;
  apparmor: SecurityProfile | null;
}
export interface LinuxContainerConfig {
  resources: LinuxContainerResources | null;
  securityContext: LinuxContainerSecurityContext | null;
}
export interface ContainerMetadata {
  name: string;
  attempt: number;
}
export interface Device {
  containerPath: string;
  hostPath: string;
  /** cgroup permissions: any of "r", "w", "m". */
  permissions: string;
}
export interface ContainerConfig {
  metadata: ContainerMetadata | null;
  image: ImageSpec | null;
  command: string[];
  args: string[];
  workingDir: string;
  envs: KeyValue[];
  mounts: Mount[];
  devices: Device[];
  labels: StringMap;
  annotations: StringMap;
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  linux: LinuxContainerConfig | null;
  /** proto field `CDI_devices`. */
  CDIDevices: { name: string }[];
}
export interface CreateContainerRequest {
  podSandboxId: string;
  config: ContainerConfig | null;
  sandboxConfig: PodSandboxConfig | null;
}
export interface CreateContainerResponse {
  containerId: string;
}
export interface ContainerIdRequest {
  containerId: string;
}
export interface ContainerFilter {
  id: string;
  state: { state: ContainerState } | null;
  podSandboxId: string;
  labelSelector: StringMap;
}
export interface ListContainersRequest {
  filter: ContainerFilter | null;
}
export interface Container {
  id: string;
  podSandboxId: string;
  metadata: ContainerMetadata | null;
  image: ImageSpec | null;
  imageRef: string;
  state: ContainerState;
  createdAt: Int64;
  labels: StringMap;
  annotations: StringMap;
  imageId: string;
}
export interface ListContainersResponse {
  containers: Container[];
}
export interface ContainerStatusRequest {
  containerId: string;
  verbose: boolean;
}
export interface ContainerStatus {
  id: string;
  metadata: ContainerMetadata | null;
  state: ContainerState;
  createdAt: Int64;
  startedAt: Int64;
  finishedAt: Int64;
  exitCode: number;
  image: ImageSpec | null;
  imageRef: string;
  reason: string;
  message: string;
  labels: StringMap;
  annotations: StringMap;
  mounts: Mount[];
  logPath: string;
  resources: { linux: LinuxContainerResources | null } | null;
  imageId: string;
}
export interface ContainerStatusResponse {
  status: ContainerStatus | null;
  info: StringMap;
}
export interface ExecSyncRequest {
  containerId: string;
  cmd: string[];
  timeout: Int64;
}
export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}
export interface CheckpointContainerRequest {
  containerId: string;
  location: string;
  timeout: Int64;
}

export interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: Int64;
  uid: Int64Value | null;
  username: string;
  spec: ImageSpec | null;
  pinned: boolean;
}
export interface ImageStatusRequest {
  image: ImageSpec | null;
  verbose: boolean;
}
export interface ImageStatusResponse {
  /** null when the runtime does not have the image. */
  image: Image | null;
  info: StringMap;
}
export interface AuthConfig {
  username: string;
  password: string;
  auth: string;
  serverAddress: string;
  identityToken: string;
  registryToken: string;
}
export interface PullImageRequest {
  image: ImageSpec | null;
  auth: AuthConfig | null;
  sandboxConfig: PodSandboxConfig | null;
}
export interface PullImageResponse {
  imageRef: string;
}
// biome-ignore lint/complexity/noBannedTypes: the runtime's empty replies carry no fields.
export type Empty = {};

/** Every call the client makes: service, request and response per RPC name. */
export interface CriRpcs {
  Version: { service: "RuntimeService"; req: VersionRequest; res: VersionResponse };
  RunPodSandbox: { service: "RuntimeService"; req: RunPodSandboxRequest; res: RunPodSandboxResponse };
  StopPodSandbox: { service: "RuntimeService"; req: StopPodSandboxRequest; res: Empty };
  RemovePodSandbox: { service: "RuntimeService"; req: RemovePodSandboxRequest; res: Empty };
  PodSandboxStatus: {
    service: "RuntimeService";
    req: PodSandboxStatusRequest;
    res: PodSandboxStatusResponse;
  };
  ListPodSandbox: { service: "RuntimeService"; req: ListPodSandboxRequest; res: ListPodSandboxResponse };
  CreateContainer: { service: "RuntimeService"; req: CreateContainerRequest; res: CreateContainerResponse };
  StartContainer: { service: "RuntimeService"; req: ContainerIdRequest; res: Empty };
  RemoveContainer: { service: "RuntimeService"; req: ContainerIdRequest; res: Empty };
  ListContainers: { service: "RuntimeService"; req: ListContainersRequest; res: ListContainersResponse };
  ContainerStatus: { service: "RuntimeService"; req: ContainerStatusRequest; res: ContainerStatusResponse };
  ExecSync: { service: "RuntimeService"; req: ExecSyncRequest; res: ExecSyncResponse };
  CheckpointContainer: { service: "RuntimeService"; req: CheckpointContainerRequest; res: Empty };
  ImageStatus: { service: "ImageService"; req: ImageStatusRequest; res: ImageStatusResponse };
  PullImage: { service: "ImageService"; req: PullImageRequest; res: PullImageResponse };
}
export type CriRpcName = keyof CriRpcs;
