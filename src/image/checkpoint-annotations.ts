/**
 * The manifest annotations of a checkpoint image. containerd (2.1–2.3) restores from an image whose manifest
 * has `org.criu.checkpoint.container.name`; CRI-O looks for its own key; kybernate adds the checkpointed
 * container's name and GPU metadata under kybernate.io/ so that an operator, a scheduler or `kybernate restore`
 * can tell what GPUs a restore needs before pulling the image. Read back, they are untrusted: a problem names
 * the annotation, never its value.
 */
export const CRIU_CHECKPOINT_NAME = "org.criu.checkpoint.container.name";
export const CRIO_CHECKPOINT_NAME = "io.kubernetes.cri-o.annotations.checkpoint.name";
export const CRIU_POD_NAME = "org.criu.checkpoint.pod.name";
export const CRIU_POD_NAMESPACE = "org.criu.checkpoint.pod.namespace";
export const CRIU_ROOTFS_IMAGE = "org.criu.checkpoint.rootfsImageName";
export const CRIU_ENGINE = "org.criu.checkpoint.engine.name";
export const OCI_CREATED = "org.opencontainers.image.created";

export const K = {
  schema: "kybernate.io/schema",
  version: "kybernate.io/kybernate-version",
  container: "kybernate.io/container-name",
  pod: "kybernate.io/pod",
  gpuCount: "kybernate.io/gpu-count",
  gpuModels: "kybernate.io/gpu-models",
  gpuUuids: "kybernate.io/gpu-uuids",
  gpuMemoryMiB: "kybernate.io/gpu-memory-mib",
  driver: "kybernate.io/driver-version",
  vramBytes: "kybernate.io/vram-bytes",
} as const;

/** The image config label holding what a restore replays (mounts, devices, env, labels; JSON). */
export const RESTORE_SPEC_LABEL = "kybernate.io/restore-spec";

export interface CheckpointGpu {
  uuid: string;
  name: string;
  memoryMiB?: number;
}

/** What the annotations say about the checkpoint. */
export interface CheckpointImageInfo {
  containerName: string;
  /** "namespace/name". */
  pod?: string;
  kybernateVersion?: string;
  gpus: CheckpointGpu[];
  driverVersion?: string;
  vramBytes?: number;
}

const GPU_UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A CRI container name is a DNS label; CRI-O and containerd accept a little more. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/;
const MODEL = /^[A-Za-z0-9][A-Za-z0-9 ._()/+-]{0,127}$/;
const DRIVER = /^\d{1,4}(\.\d{1,4}){0,3}$/;
const COUNT = /^(0|[1-9]\d{0,2})$/;
const BYTES = /^(0|[1-9]\d{0,18})$/;
const MAX_GPUS = 64;

export function checkpointAnnotations(
  info: CheckpointImageInfo & { rootfsImage?: string; created: string },
): Record<string, string> {
  const problem = infoProblem(info);
  if (problem) throw new Error(`cannot annotate the image: ${problem}`);
  const a: Record<string, string> = {
    [CRIU_CHECKPOINT_NAME]: info.containerName,
    [CRIO_CHECKPOINT_NAME]: info.containerName,
    [CRIU_ENGINE]: "containerd",
    [OCI_CREATED]: info.created,
    [K.schema]: "1",
    [K.container]: info.containerName,
    [K.gpuCount]: String(info.gpus.length),
  };
  if (info.pod) {
    a[K.pod] = info.pod;
    const [ns, name] = info.pod.split("/");
    if (ns && name) {
      a[CRIU_POD_NAMESPACE] = ns;
      a[CRIU_POD_NAME] = name;
    }
  }
  if (info.rootfsImage) a[CRIU_ROOTFS_IMAGE] = info.rootfsImage;
  if (info.kybernateVersion) a[K.version] = info.kybernateVersion;
  if (info.gpus.length) {
    a[K.gpuModels] = info.gpus.map((g) => g.name).join(",");
    a[K.gpuUuids] = info.gpus.map((g) => g.uuid).join(",");
    if (info.gpus.every((g) => g.memoryMiB !== undefined))
      a[K.gpuMemoryMiB] = info.gpus.map((g) => String(g.memoryMiB)).join(",");
  }
  if (info.driverVersion) a[K.driver] = info.driverVersion;
  if (info.vramBytes !== undefined) a[K.vramBytes] = String(info.vramBytes);
  return a;
}

function infoProblem(info: CheckpointImageInfo): string | undefined {
  if (!NAME.test(info.containerName)) return "the container name is not a CRI container name";
  if (info.gpus.length > MAX_GPUS) return `more than ${MAX_GPUS} GPUs`;
  for (const g of info.gpus) {
    if (!GPU_UUID.test(g.uuid)) return "a GPU UUID is not GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (!MODEL.test(g.name)) return "a GPU model name has characters an annotation list cannot carry";
  }
  if (info.driverVersion !== undefined && !DRIVER.test(info.driverVersion))
    return "the driver version is not N.N.N";
  return undefined;
}

export class AnnotationError extends Error {
  override readonly name = "AnnotationError";
}

/**
 * What a checkpoint image's manifest annotations say, checked. Throws an AnnotationError when the image is not a
 * checkpoint image, was not built by kybernate (no kybernate.io metadata) or carries malformed metadata.
 */
export function readCheckpointAnnotations(
  annotations: Record<string, string> | undefined,
): CheckpointImageInfo {
  const a = annotations ?? {};
  const fail = (why: string): never => {
    throw new AnnotationError(why);
  };
  const name = a[CRIU_CHECKPOINT_NAME];
  if (name === undefined)
    fail(
      `its manifest has no ${CRIU_CHECKPOINT_NAME} annotation: it is not a checkpoint image (containerd would create a plain container from it)`,
    );
  if (a[K.schema] === undefined)
    fail(
      `its kybernate GPU metadata is missing (no ${K.schema} annotation): build the image with kybernate image build, which records the GPUs a restore needs`,
    );
  if (a[K.schema] !== "1")
    fail(`annotation ${K.schema} is not 1: built by a newer kybernate? Upgrade kybernate here`);
  if (!NAME.test(String(name))) fail(`annotation ${CRIU_CHECKPOINT_NAME} is not a container name`);
  if (a[CRIO_CHECKPOINT_NAME] !== undefined && a[CRIO_CHECKPOINT_NAME] !== name)
    fail(`annotations ${CRIU_CHECKPOINT_NAME} and ${CRIO_CHECKPOINT_NAME} name different containers`);
  if (a[K.container] !== name)
    fail(`annotation ${K.container} does not name the container ${CRIU_CHECKPOINT_NAME} names`);
  const countText = a[K.gpuCount];
  if (countText === undefined || !COUNT.test(countText))
    fail(`annotation ${K.gpuCount} is missing or not a whole number`);
  const count = Number(countText);
  if (count > MAX_GPUS) fail(`annotation ${K.gpuCount} is above ${MAX_GPUS}`);
  const list = (key: string): string[] => {
    const v = a[key];
    if (count === 0) {
      if (v !== undefined && v !== "") fail(`annotation ${key} lists GPUs but ${K.gpuCount} is 0`);
      return [];
    }
    if (v === undefined) fail(`annotation ${key} is missing (${K.gpuCount} is ${count})`);
    const items = String(v).split(",");
    if (items.length !== count)
      fail(`annotation ${key} lists ${items.length} entries, ${K.gpuCount} says ${count}`);
    return items;
  };
  const uuids = list(K.gpuUuids);
  const models = list(K.gpuModels);
  for (const [i, u] of uuids.entries())
    if (!GPU_UUID.test(u)) fail(`entry ${i + 1} of annotation ${K.gpuUuids} is not a GPU UUID`);
  for (const [i, m] of models.entries())
    if (!MODEL.test(m)) fail(`entry ${i + 1} of annotation ${K.gpuModels} is not a GPU model name`);
  if (new Set(uuids).size !== uuids.length) fail(`annotation ${K.gpuUuids} names a GPU twice`);
  let memory: number[] | undefined;
  if (a[K.gpuMemoryMiB] !== undefined && count > 0) {
    memory = list(K.gpuMemoryMiB).map((m, i) =>
      BYTES.test(m)
        ? Number(m)
        : fail(`entry ${i + 1} of annotation ${K.gpuMemoryMiB} is not a whole number`),
    );
  }
  const info: CheckpointImageInfo = {
    containerName: String(name),
    gpus: uuids.map((uuid, i) => ({
      uuid,
      name: models[i] ?? "",
      ...(memory ? { memoryMiB: memory[i] ?? 0 } : {}),
    })),
  };
  const driver = a[K.driver];
  if (driver !== undefined) {
    if (!DRIVER.test(driver)) fail(`annotation ${K.driver} is not a driver version (N.N.N)`);
    info.driverVersion = driver;
  }
  const vram = a[K.vramBytes];
  if (vram !== undefined) {
    if (!BYTES.test(vram) || !Number.isSafeInteger(Number(vram)))
      fail(`annotation ${K.vramBytes} is not a whole number of bytes`);
    info.vramBytes = Number(vram);
  }
  const pod = a[K.pod];
  if (pod !== undefined) {
    if (!/^[a-z0-9][a-z0-9.-]{0,252}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/.test(pod))
      fail(`annotation ${K.pod} is not namespace/name`);
    info.pod = pod;
  }
  const version = a[K.version];
  if (version !== undefined && /^[0-9A-Za-z.+-]{1,64}$/.test(version)) info.kybernateVersion = version;
  return info;
}
