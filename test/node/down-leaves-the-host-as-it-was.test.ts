/**
 * `testnode:down` leaves the host as it was before `up`, pod network included: the same links, addresses,
 * routes, network namespaces, forwarding sysctls, netfilter rules, mounts, CNI cache and cgroups, even after
 * pod-network pods ran and were left running. Brings the node up again at the end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { TestCriClient } from "../support/test-cri-client.js";
import { loadTestNode, testNodeEnvPath } from "../support/testnode.js";

const up = process.getuid?.() === 0 && existsSync(testNodeEnvPath());
const root = join(testNodeEnvPath(), "..", "..");

const sh = (cmd: string, args: string[]): string => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    return `(${cmd} ${args.join(" ")} failed: ${(error as Error).message.split("\n")[0]})`;
  }
};

function hostState(prefix: string): Record<string, unknown> {
  const read = (p: string) => (existsSync(p) ? readFileSync(p, "utf8").trim() : "(absent)");
  const saver = (name: string) => join(prefix, "bin", name);
  return {
    links: sh("ip", ["-o", "link", "show"])
      .split("\n")
      .map((l) => l.split(":")[1]?.trim())
      .filter(Boolean)
      .sort(),
    addresses: sh("ip", ["-o", "addr", "show"]).split("\n").sort(),
    routes: [
      ...sh("ip", ["route", "show"]).split("\n"),
      ...sh("ip", ["-6", "route", "show"]).split("\n"),
    ].sort(),
    netns: existsSync("/run/netns") ? readdirSync("/run/netns").sort() : [],
    sysctl: [
      "/proc/sys/net/ipv4/ip_forward",
      "/proc/sys/net/ipv6/conf/all/forwarding",
      "/proc/sys/net/bridge/bridge-nf-call-iptables",
    ].map((p) => `${p}=${read(p)}`),
    netfilter: ["iptables-save", "ip6tables-save"].map((s) =>
      existsSync(saver(s))
        ? sh(saver(s), [])
            .split("\n")
            .filter((l) => !l.startsWith("#"))
            .map((l) => l.replace(/\[\d+:\d+\]/, ""))
        : "(no saver)",
    ),
    mounts: readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[4] ?? "")
      .filter((m) => /kybernate-testnode|netns|cni|\.testnode/.test(m))
      .sort(),
    cniCache: existsSync("/var/lib/cni") ? readdirSync("/var/lib/cni") : "(absent)",
    k8sCgroups: readdirSync("/sys/fs/cgroup")
      .map((h) => join("/sys/fs/cgroup", h, "k8s.io"))
      .filter((d) => existsSync(d)),
  };
}

const script = (name: string) =>
  execFileSync("bash", [join(root, "test", "node", name)], {
    stdio: ["ignore", "ignore", "pipe"],
    cwd: root,
  });

describe("testnode:down", {
  skip: up ? false : "the test node is not up (npm run testnode:up as root)",
}, () => {
  it("leaves the host as it was before up, after pod-network pods ran", async () => {
    const { prefix } = loadTestNode();
    script("down.sh");
    const before = hostState(prefix);
    script("up.sh");
    try {
      const node = loadTestNode();
      const cri = new TestCriClient(node.criSocket);
      try {
        for (const i of [1, 2]) {
          const pod = await cri.runPodNetworkPod(`down-check-${i}-${process.pid}`, "kybernate-test");
          const id = await cri.createContainer(pod.podId, pod.config, {
            name: "c",
            image: node.image,
            command: ["sleep", "3600"],
          });
          await cri.startContainer(id);
          assert.match(await cri.podIp(pod.podId), /^10\.233\.0\.\d+$/, "on the pod network");
        }
      } finally {
        cri.close();
      }
      assert.notDeepEqual(
        hostState(prefix),
        before,
        "the running node changes the host (bridge, veths, netns)",
      );
      // Left running: down removes them.
      script("down.sh");
      assert.deepEqual(hostState(prefix), before);
    } finally {
      script("up.sh");
    }
  });
});
