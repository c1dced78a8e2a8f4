/**
 * A container id as containerd makes them (its identifiers rule: letters and digits, runs joined by single ".",
 * "_" or "-"), at most 128 characters. Ids become directory names under kybernate's state dir, so ".", "..",
 * "", "/" and anything path-like must never pass.
 */
const CONTAINER_ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
export const MAX_CONTAINER_ID_LENGTH = 128;

/** Why `id` is not a container id, or undefined when it is one. */
export function containerIdProblem(id: unknown): string | undefined {
  if (typeof id !== "string") return `a container id must be a string, got ${typeof id}`;
  if (id.length === 0) return "the container id is empty";
  if (id.length > MAX_CONTAINER_ID_LENGTH)
    return `the container id is ${id.length} characters long, over ${MAX_CONTAINER_ID_LENGTH}`;
  if (!CONTAINER_ID.test(id))
    return `${JSON.stringify(id.slice(0, 40))} is not a container id (letters and digits joined by ".", "_" or "-")`;
  return undefined;
}

export const isContainerId = (id: unknown): id is string => containerIdProblem(id) === undefined;
