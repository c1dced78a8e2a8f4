import { atLeast } from "./versions.js";

export const NRI_TABLE = 'plugins."io.containerd.nri.v1.nri"';
/** Where containerd 2.2.7+/2.3.4+ read the restore-via-create switch (the CRI runtime plugin). */
export const CRI_RUNTIME_TABLE = 'plugins."io.containerd.cri.v1.runtime"';
export const RESTORE_KEY = "enable_experimental_restore_via_create";
/** containerd 2.2.7+/2.3.4+/2.4: false turns checkpoint and restore off (internal/cri/config RuntimeConfig.EnableCRIU). */
export const CRIU_KEY = "enable_criu";

export interface ConfigFinding {
  ok: boolean;
  what: string;
  /** The exact TOML to add when not ok. */
  add?: string;
}

/**
 * The keys of a containerd TOML config, as "table.key" → raw value. Enough for the two switches kybernate
 * needs (tables, `key = value` lines, comments); not a general TOML parser.
 */
export function tomlKeys(text: string): Map<string, string> {
  const keys = new Map<string, string>();
  let table = "";
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\s+#.*$/, "").trim();
    if (!line || line.startsWith("#")) continue;
    const header = /^\[\[?\s*(.+?)\s*\]\]?$/.exec(line);
    if (header) {
      table = (header[1] ?? "").replace(/\s*\.\s*/g, ".");
      continue;
    }
    const kv = /^([A-Za-z0-9_."-]+)\s*=\s*(.+)$/.exec(line);
    if (kv) keys.set(table ? `${table}.${kv[1]}` : (kv[1] ?? ""), (kv[2] ?? "").trim());
  }
  return keys;
}

/** Whether this containerd needs the restore-via-create switch: 2.2.7+ in 2.2, 2.3.4+ in 2.3 (their release notes; 2.4 removes restore through CreateContainer). */
export function needsRestoreSwitch(version: string): boolean {
  // 2.4 has no restore through CreateContainer at all, and no such key.
  if (atLeast(version, "2.4.0")) return false;
  if (atLeast(version, "2.3.0")) return atLeast(version, "2.3.4");
  if (atLeast(version, "2.2.0")) return atLeast(version, "2.2.7");
  return false;
}

/** NRI enabled, and restore-via-create enabled where this containerd version needs it. */
export function checkContainerdConfig(text: string, version: string | undefined): ConfigFinding[] {
  const keys = tomlKeys(text);
  const findings: ConfigFinding[] = [];
  const disable = keys.get(`${NRI_TABLE}.disable`);
  // containerd 2.x enables NRI unless told otherwise; 1.7 disabled it by default.
  const nriDefaultOn = version ? atLeast(version, "2.0.0") : true;
  const nriOn = disable === undefined ? nriDefaultOn : disable !== "true";
  findings.push({
    ok: nriOn,
    what: nriOn
      ? `NRI enabled (${disable === undefined ? "containerd's default" : `disable = ${disable}`})`
      : `NRI is disabled (${disable === undefined ? `off by default in containerd ${version}` : `disable = ${disable}`})`,
    ...(nriOn ? {} : { add: `[${NRI_TABLE}]\n  disable = false` }),
  });
  if (version && needsRestoreSwitch(version)) {
    const on = keys.get(`${CRI_RUNTIME_TABLE}.${RESTORE_KEY}`) === "true";
    findings.push({
      ok: on,
      what: on
        ? `${RESTORE_KEY} = true (needed on containerd ${version})`
        : `containerd ${version} restores from a checkpoint archive only with ${RESTORE_KEY} = true`,
      ...(on ? {} : { add: `[${CRI_RUNTIME_TABLE}]\n  ${RESTORE_KEY} = true` }),
    });
  }
  if (keys.get(`${CRI_RUNTIME_TABLE}.${CRIU_KEY}`) === "false")
    findings.push({
      ok: false,
      what: `${CRIU_KEY} = false: containerd refuses every checkpoint and restore`,
      add: `[${CRI_RUNTIME_TABLE}]\n  ${CRIU_KEY} = true`,
    });
  if (version && atLeast(version, "2.4.0"))
    findings.push({
      ok: false,
      what:
        `containerd ${version} removed restore through CRI CreateContainer, and its successor, the CRI RestorePod call ` +
        "(KEP-5823), is in neither containerd 2.4.0-beta.0 nor the CRI API it ships (k8s.io/cri-api v0.36.3): " +
        "checkpoints work, restores need containerd 2.1–2.3 (2.2.7+ and 2.3.4+ with " +
        `${RESTORE_KEY} = true under [${CRI_RUNTIME_TABLE}]); see docs/ARCHITECTURE.md "containerd versions"`,
    });
  return findings;
}
