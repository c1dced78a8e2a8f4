// TypeScript shapes of the NRI messages in proto/nri/api.proto, as protobufjs decodes them (camelCase,
// defaults filled in). Only what kybernate reads or writes.

export enum NriEvent {
  Unknown = 0,
  RunPodSandbox = 1,
  StopPodSandbox = 2,
  RemovePodSandbox = 3,
  CreateContainer = 4,
  PostCreateContainer = 5,
  StartContainer = 6,
  PostStartContainer = 7,
  UpdateContainer = 8,
  PostUpdateContainer = 9,
  StopContainer = 10,
  RemoveContainer = 11,
}

export enum ContainerState {
  Unknown = 0,
  Created = 1,
  Paused = 2,
  Running = 3,
  Stopped = 4,
}

export interface PodSandbox {
  id: string;
  name: string;
  uid: string;
  namespace: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtimeHandler: string;
  linux?: { cgroupParent: string; cgroupsPath: string } | null;
  pid: number;
  ips: string[];
}

export interface Mount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface LinuxDevice {
  path: string;
  type: string;
  major: number;
  minor: number;
  fileMode?: { value: number } | null;
  uid?: { value: number } | null;
  gid?: { value: number } | null;
}

export interface Container {
  id: string;
  podSandboxId: string;
  name: string;
  state: ContainerState;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  args: string[];
  env: string[];
  mounts: Mount[];
  linux?: {
    namespaces: { type: string; path: string }[];
    devices: LinuxDevice[];
    cgroupsPath: string;
  } | null;
  pid: number;
  CDIDevices: { name: string }[];
}

export interface ConfigureRequest {
  config: string;
  runtimeName: string;
  runtimeVersion: string;
  registrationTimeout: number;
  requestTimeout: number;
}

export interface SynchronizeRequest {
  pods: PodSandbox[];
  containers: Container[];
  more: boolean;
}

/** What a plugin may ask of a container being created. Keys prefixed "-" remove (NRI convention). */
export interface ContainerAdjustment {
  annotations?: Record<string, string>;
  mounts?: Mount[];
  env?: { key: string; value: string }[];
  CDIDevices?: { name: string }[];
}
