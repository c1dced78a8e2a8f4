/**
 * kybernate's layers, as the folders of src/ name them, and what each may import. Dependencies point one way:
 * base → host → wire → nri → plugin; gpu → checkpoint → daemon → agent → cli and hook; admin (node
 * administration) on host; cri and image are leaves only the CLI uses; containerd (its Tasks API) a leaf the daemon
 * uses; store (the node's page store) on host, for the daemon and the CLI. Checked by dependency-cruiser in npm test.
 */
import { cruise, type IForbiddenRuleType } from "dependency-cruiser";

/** Each layer and the layers it may import (itself always included). */
export const LAYERS: Record<string, readonly string[]> = {
  base: [],
  host: ["base"],
  wire: ["base", "host"],
  nri: ["base", "host", "wire"],
  plugin: ["base", "host", "wire", "nri"],
  gpu: ["base", "host"],
  checkpoint: ["base", "host", "gpu"],
  // The node's page store: page images out of CRIU's image directory and back, archives rewritten around it.
  store: ["base", "host"],
  daemon: ["base", "host", "gpu", "checkpoint", "containerd", "store"],
  agent: ["base", "host", "wire", "nri", "plugin", "gpu", "checkpoint", "daemon", "containerd", "store"],
  // The hook runs while a container is frozen: the daemon's client and protocol, the freezer, nothing more.
  hook: ["base", "host", "daemon"],
  admin: ["base", "host", "checkpoint"],
  cri: ["base"],
  // containerd's own Tasks API (resuming a task containerd believes paused): a leaf like cri.
  containerd: ["base"],
  // OCI checkpoint images: layout, registry client, annotations; a leaf the CLI uses.
  image: ["base"],
  cli: [
    "base",
    "host",
    "wire",
    "nri",
    "plugin",
    "gpu",
    "checkpoint",
    "daemon",
    "agent",
    "admin",
    "cri",
    "containerd",
    "image",
    "store",
  ],
};

export function layerRules(layers = LAYERS): IForbiddenRuleType[] {
  const rules: IForbiddenRuleType[] = [
    { name: "no-circular", severity: "error", from: { path: "^src/" }, to: { circular: true } },
    {
      name: "no-unknown-layer",
      severity: "error",
      from: { path: "^src/", pathNot: `^src/(${Object.keys(layers).join("|")})/` },
      to: {},
    },
  ];
  for (const [layer, allowed] of Object.entries(layers))
    rules.push({
      name: `${layer}-imports-only-${[...allowed, layer].join("-")}`,
      severity: "error",
      from: { path: `^src/${layer}/` },
      to: { path: "^src/", pathNot: `^src/(${[layer, ...allowed].join("|")})/` },
    });
  // Only the hook's two modules of the daemon: its client and the wire format.
  rules.push({
    name: "hook-uses-only-the-daemon-client-and-protocol",
    severity: "error",
    from: { path: "^src/hook/" },
    to: { path: "^src/daemon/", pathNot: "^src/daemon/(client|protocol)\\.ts$" },
  });
  return rules;
}

export interface Violation {
  rule: string;
  from: string;
  to: string;
  cycle?: string[];
}

/** Every import of the TypeScript sources under `dir` (type-only ones too) that breaks a rule. */
export async function layerViolations(dir = "src", layers = LAYERS): Promise<Violation[]> {
  const result = await cruise(
    [dir],
    {
      tsPreCompilationDeps: true,
      doNotFollow: { path: "node_modules" },
      exclude: { path: "node_modules" },
      validate: true,
      ruleSet: { forbidden: layerRules(layers) },
    },
    undefined,
    { tsConfig: { fileName: "tsconfig.json" } },
  );
  if (typeof result.output === "string") throw new Error("dependency-cruiser returned text, not a result");
  return result.output.summary.violations.map((v) => ({
    rule: v.rule.name,
    from: v.from,
    to: v.to,
    ...(v.cycle ? { cycle: v.cycle.map((c) => (typeof c === "string" ? c : c.name)) } : {}),
  }));
}
