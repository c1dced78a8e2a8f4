/**
 * Pods and containers shaped exactly as the kubelet's CRI requests make them (pkg/kubelet/kuberuntime:
 * generateContainerConfig, makeMounts; pkg/kubelet: the pod folder's etc-hosts and volumes), under a fake kubelet
 * root: the pod's log folder <root>/var/log/pods/<ns>_<pod>_<uid>, the pod folder <root>/var/lib/kubelet/pods/<uid>
 * with etc-hosts, the service-account token volume, emptyDir volumes and per-container termination-log files.
 * There is no kubelet on the test machines; these are its requests.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MountSpec } from "../../src/cri/client.js";
import type { In, PodSandboxConfig } from "../../src/cri/types.js";
import type { TestCriClient } from "./test-cri-client.js";

export interface KubeletPod {
  podId: string;
  config: In<PodSandboxConfig>;
  name: string;
  namespace: string;
  uid: string;
  /** /var/lib/kubelet/pods/<uid> under the fake root. */
  podDir: string;
  /** /var/log/pods/<ns>_<pod>_<uid> under the fake root. */
  logDir: string;
}

export const SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount";

/** A hostNetwork pod (the test node has no CNI network) as the kubelet runs it. */
export async function runKubeletPod(
  cri: TestCriClient,
  root: string,
  name: string,
  namespace: string,
): Promise<KubeletPod> {
  const uid = randomUUID();
  const podDir = join(root, "var/lib/kubelet/pods", uid);
  const logDir = join(root, "var/log/pods", `${namespace}_${name}_${uid}`);
  mkdirSync(podDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  // The kubelet writes the pod's hosts file itself (a hostNetwork pod's is the node's).
  writeFileSync(
    join(podDir, "etc-hosts"),
    "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n",
  );
  const labels = {
    "io.kubernetes.pod.name": name,
    "io.kubernetes.pod.namespace": namespace,
    "io.kubernetes.pod.uid": uid,
  };
  const config: In<PodSandboxConfig> = {
    metadata: { name, namespace, uid, attempt: 0 },
    logDirectory: logDir,
    labels,
    annotations: {
      "kubernetes.io/config.source": "api",
      "kubernetes.io/config.seen": new Date().toISOString(),
    },
    linux: {
      cgroupParent: "",
      securityContext: { namespaceOptions: { network: "NODE", pid: "CONTAINER", ipc: "POD" } },
    },
  };
  const podId = await cri.runPodSandbox(config);
  return { podId, config, name, namespace, uid, podDir, logDir };
}

export interface KubeletContainerOptions {
  name: string;
  image: string;
  /** Empty for a checkpoint image: containerd restores the checkpointed process. */
  command: string[];
  /** hostPath volumes: container path → host path. */
  hostPaths?: Record<string, string>;
  /** emptyDir volumes: container path → volume name. */
  emptyDirs?: Record<string, string>;
  /** The container's other mounts (the GPU double's). */
  extraMounts?: MountSpec[];
  env?: Record<string, string>;
  /** The pod spec's image as written, when `image` is the id PullImage returned (as the kubelet sends both). */
  userSpecifiedImage?: string;
  restartCount?: number;
}

/** CreateContainer as the kubelet sends it: its labels, annotations, log path and mounts, in its order. */
export async function createKubeletContainer(
  cri: TestCriClient,
  pod: KubeletPod,
  o: KubeletContainerOptions,
): Promise<{ id: string; mounts: MountSpec[]; terminationLog: string }> {
  const restart = o.restartCount ?? 0;
  const mounts: MountSpec[] = [];
  for (const [path, host] of Object.entries(o.hostPaths ?? {}))
    mounts.push({ containerPath: path, hostPath: host });
  for (const [path, volume] of Object.entries(o.emptyDirs ?? {})) {
    const dir = join(pod.podDir, "volumes/kubernetes.io~empty-dir", volume);
    mkdirSync(dir, { recursive: true, mode: 0o777 });
    mounts.push({ containerPath: path, hostPath: dir });
  }
  // The projected service-account volume every pod gets (kube-api-access-<5 random>), read-only.
  const token = join(
    pod.podDir,
    "volumes/kubernetes.io~projected",
    `kube-api-access-${randomBytes(3).toString("hex").slice(0, 5)}`,
  );
  mkdirSync(token, { recursive: true });
  writeFileSync(join(token, "token"), "eyJhbGciOiJSUzI1NiJ9.test.token\n");
  writeFileSync(join(token, "namespace"), pod.namespace);
  writeFileSync(join(token, "ca.crt"), "-----BEGIN CERTIFICATE-----\n");
  mounts.push({ containerPath: SERVICE_ACCOUNT_PATH, hostPath: token, readonly: true });
  mounts.push(...(o.extraMounts ?? []));
  mounts.push({ containerPath: "/etc/hosts", hostPath: join(pod.podDir, "etc-hosts") });
  // kuberuntime's makeMounts: a fresh termination-log file per container instance, 0666.
  const terminationLog = join(pod.podDir, "containers", o.name, randomBytes(4).toString("hex"));
  mkdirSync(join(pod.podDir, "containers", o.name), { recursive: true });
  writeFileSync(terminationLog, "");
  chmodSync(terminationLog, 0o666);
  mounts.push({ containerPath: "/dev/termination-log", hostPath: terminationLog });
  mkdirSync(join(pod.logDir, o.name), { recursive: true, mode: 0o755 });
  const id = await cri.createContainer(pod.podId, pod.config, {
    name: o.name,
    image: o.image,
    command: o.command,
    mounts,
    ...(o.env ? { env: o.env } : {}),
    ...(o.userSpecifiedImage ? { userSpecifiedImage: o.userSpecifiedImage } : {}),
    labels: {
      "io.kubernetes.container.name": o.name,
      "io.kubernetes.pod.name": pod.name,
      "io.kubernetes.pod.namespace": pod.namespace,
      "io.kubernetes.pod.uid": pod.uid,
    },
    annotations: {
      "io.kubernetes.container.hash": randomBytes(4).toString("hex"),
      "io.kubernetes.container.restartCount": String(restart),
      "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
      "io.kubernetes.container.terminationMessagePolicy": "File",
      "io.kubernetes.pod.terminationGracePeriod": "30",
    },
    logPath: join(o.name, `${restart}.log`),
  });
  return { id, mounts, terminationLog };
}
