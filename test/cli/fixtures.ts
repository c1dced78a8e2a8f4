// Canned CRI objects for the CLI's unit tests, shaped as @grpc/proto-loader hands them to the fake runtime.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { c as createTar } from "tar";

export const POD_A = "aaaa1111000000000000000000000000000000000000000000000000000000aa";
export const POD_B = "bbbb2222000000000000000000000000000000000000000000000000000000bb";

export function pod(id: string, name: string, namespace = "team", state = "SANDBOX_READY") {
  return {
    id,
    metadata: { name, uid: `uid-${name}`, namespace, attempt: 0 },
    state,
    createdAt: "1",
    labels: { app: name },
    annotations: {},
    runtimeHandler: "",
  };
}

export function container(id: string, name: string, podId: string, state = "CONTAINER_RUNNING") {
  return {
    id,
    podSandboxId: podId,
    metadata: { name, attempt: 0 },
    image: { image: "busybox" },
    imageRef: "sha256:0",
    state,
    createdAt: "1",
    labels: {},
    annotations: {},
    imageId: "",
  };
}

/** A small stand-in for a CRI checkpoint tar: the metadata files containerd writes plus a CRIU image. */
export async function buildArchive(
  files: Record<string, string> = defaultArchiveFiles(),
  name = "checkpoint.tar",
): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "kybernate-cli-archive-"));
  const src = join(dir, "src");
  mkdirSync(join(src, "checkpoint"), { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(src, f), text);
  writeFileSync(join(src, "checkpoint", "pages-1.img"), Buffer.alloc(4096, 7));
  const file = join(dir, name);
  await createTar({ file, cwd: src }, ["checkpoint", ...Object.keys(files)]);
  return file;
}

export function defaultArchiveFiles(): Record<string, string> {
  return {
    "config.dump": JSON.stringify({
      id: "f9ffdaed3bee",
      name: "worker_trainer_ml_uid-1_0",
      rootfsImage: "localhost:5555/kybernate/busybox:1",
      rootfsImageName: "localhost:5555/kybernate/busybox:1",
      checkpointedTime: "2026-11-29T15:51:23.98Z",
    }),
    "spec.dump": JSON.stringify({
      ociVersion: "1.2.1",
      annotations: {
        "io.kubernetes.cri.container-name": "worker",
        "io.kubernetes.cri.sandbox-name": "trainer",
        "io.kubernetes.cri.sandbox-namespace": "ml",
        "io.kubernetes.cri.sandbox-uid": "uid-1",
      },
    }),
    "status.dump": JSON.stringify({
      id: "f9ffdaed3bee",
      metadata: { name: "worker" },
      labels: { "io.kubernetes.container.name": "worker", tier: "gpu" },
      annotations: { "kybernate.io/checkpoint": "true" },
    }),
  };
}
