import type { In, PodSandboxConfig, PodSandboxStatusResponse, StringMap } from "../cri/types.js";
import { CliError } from "./cli-error.js";

/**
 * The PodSandboxConfig a pod was created with, as far as the runtime tells it back: CreateContainer wants
 * it again (the kubelet keeps its own copy; the CLI did not create the pod). PodSandboxStatus gives the
 * metadata, labels, annotations and namespace modes; containerd's verbose info adds the log directory,
 * hostname and cgroup parent (Go JSON of the original request, snake_case).
 */
export function podConfigFromStatus(res: PodSandboxStatusResponse): In<PodSandboxConfig> {
  const s = res.status;
  if (!s?.metadata)
    throw new CliError("the runtime returned a pod status without metadata; cannot restore into it");
  const original = originalConfig(res.info);
  const linux = isObject(original.linux) ? original.linux : {};
  const config: In<PodSandboxConfig> = {
    metadata: {
      name: s.metadata.name,
      uid: s.metadata.uid,
      namespace: s.metadata.namespace,
      attempt: s.metadata.attempt,
    },
    labels: { ...s.labels },
    annotations: { ...s.annotations },
    hostname: str(original.hostname),
    logDirectory: str(original.log_directory),
    linux: {
      cgroupParent: str(linux.cgroup_parent),
      securityContext: {
        namespaceOptions: s.linux?.namespaces?.options ?? { network: "POD", pid: "CONTAINER", ipc: "POD" },
      },
    },
  };
  return config;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === "string" ? v : "");

function originalConfig(info: StringMap): Json {
  try {
    const parsed: unknown = info.info ? JSON.parse(info.info) : undefined;
    return isObject(parsed) && isObject(parsed.config) ? parsed.config : {};
  } catch {
    return {};
  }
}
