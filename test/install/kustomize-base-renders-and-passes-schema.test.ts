/**
 * The DaemonSet base renders with kustomize (Debian's `kustomize` or `kubectl kustomize`) and every rendered
 * object passes the Kubernetes OpenAPI schema (kubernetes-models' validators, generated from it: types,
 * required fields, enums, formats). Those validators accept unknown fields, so a misspelt optional field
 * would pass: the test checks the fields kybernate relies on by value instead.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { DaemonSet } from "kubernetes-models/apps/v1";
import { Namespace, Service } from "kubernetes-models/v1";
import { isMap, isSeq, parseAllDocuments, parseDocument, type YAMLMap } from "yaml";
import { packageRoot } from "../../src/base/paths.js";

const base = join(packageRoot, "install", "kubernetes");

function render(): string {
  // The test node's prefix brings Debian's kustomize (a bare machine may have neither it nor kubectl).
  const attempts: Array<[string, string[]]> = [
    [join(packageRoot, ".testnode", "prefix", "bin", "kustomize"), ["build", base]],
    ["kustomize", ["build", base]],
    ["kubectl", ["kustomize", base]],
  ];
  const errors: string[] = [];
  for (const [bin, args] of attempts) {
    try {
      return execFileSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (error) {
      errors.push(`${bin}: ${(error as Error).message.split("\n")[0]}`);
    }
  }
  throw new Error(
    `no kustomize renderer worked (${errors.join("; ")}): install Debian's kustomize package or kubectl`,
  );
}

const models: Record<string, new (data: never) => { validate(): void }> = {
  "apps/v1/DaemonSet": DaemonSet as never,
  "v1/Namespace": Namespace as never,
  "v1/Service": Service as never,
};

test("the kustomize base renders and each object passes the Kubernetes schema", () => {
  const objects = parseAllDocuments(render()).map((d) => d.toJS() as Record<string, unknown>);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ["DaemonSet", "Namespace", "Service"]);
  for (const object of objects) {
    const Model = models[`${object.apiVersion}/${object.kind}`];
    assert.ok(Model, `no schema model for ${object.apiVersion} ${object.kind}`);
    new Model(object as never).validate();
  }
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as {
    metadata: { namespace: string };
    spec: { template: { spec: Record<string, unknown> & { initContainers: unknown[] } } };
  };
  assert.equal(ds.metadata.namespace, "kybernate-system");
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostPID, true);
  assert.equal(pod.hostNetwork, undefined, "no host network: the daemon needs only unix sockets");
  assert.deepEqual(pod.nodeSelector, { "nvidia.com/gpu.present": "true" });
  assert.equal(pod.initContainers.length, 1);
});

test("the schema check is real: a wrongly typed field fails it", () => {
  const object = parseAllDocuments(render())
    .map((d) => d.toJS() as Record<string, unknown>)
    .find((o) => o.kind === "DaemonSet") as { spec: { template: { spec: Record<string, unknown> } } };
  object.spec.template.spec.hostPID = "yes";
  assert.throws(() => new DaemonSet(object as never).validate(), /hostPID/);
});

test("every volume mount and privilege in the DaemonSet carries a comment saying why", () => {
  const doc = parseDocument(readFileSync(join(base, "daemonset.yaml"), "utf8"));
  const pod = doc.getIn(["spec", "template", "spec"]) as YAMLMap;
  const uncommented: string[] = [];
  for (const kind of ["initContainers", "containers"]) {
    const containers = pod.get(kind);
    assert.ok(isSeq(containers));
    for (const container of containers.items) {
      assert.ok(isMap(container));
      const mounts = container.get("volumeMounts");
      assert.ok(isSeq(mounts));
      // yaml hangs a comment above a sequence's first item on the sequence itself.
      for (const [i, mount] of mounts.items.entries())
        if (isMap(mount) && !mount.commentBefore && !(i === 0 && mounts.commentBefore))
          uncommented.push(`${kind} ${String(mount.get("name"))}`);
      const security = container.get("securityContext");
      assert.ok(isMap(security));
      for (const [i, pair] of security.items.entries())
        if (
          !(pair.key as { commentBefore?: string }).commentBefore &&
          !(i === 0 && security.commentBefore) &&
          String(pair.key) !== "runAsUser"
        )
          uncommented.push(`${kind} securityContext.${String(pair.key)}`);
    }
  }
  assert.deepEqual(uncommented, []);
  const hostPid = pod.items.find((p) => String(p.key) === "hostPID");
  assert.ok(hostPid && (hostPid.key as { commentBefore?: string }).commentBefore, "hostPID is justified");
});
