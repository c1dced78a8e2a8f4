import type { Container, PodSandbox } from "../nri/types.js";

/**
 * Which containers the plugin adjusts: `KEY=VALUE` terms, all of which must hold. A term matches a container
 * annotation or label, or a pod annotation or label, with that key and value; `KEY` alone matches any value.
 */
export interface Selector {
  readonly terms: readonly { key: string; value?: string }[];
  matches(pod: PodSandbox, container: Container): boolean;
}

export function parseSelector(spec: string): Selector {
  const terms = spec
    .split(",")
    .map((term) => term.trim())
    .filter((term) => term.length > 0)
    .map((term) => {
      const eq = term.indexOf("=");
      const key = eq < 0 ? term : term.slice(0, eq).trim();
      if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(key)) {
        throw new Error(
          `selector term "${term}": key must look like a label key (e.g. kybernate.io/checkpoint=true)`,
        );
      }
      return eq < 0 ? { key } : { key, value: term.slice(eq + 1).trim() };
    });
  if (terms.length === 0) throw new Error(`selector "${spec}" is empty: give KEY=VALUE[,KEY=VALUE...]`);
  return {
    terms,
    matches(pod, container) {
      return terms.every(({ key, value }) =>
        [container.annotations, container.labels, pod.annotations, pod.labels].some(
          (map) => key in map && (value === undefined || map[key] === value),
        ),
      );
    },
  };
}
