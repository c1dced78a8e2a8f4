/** gRPC status codes, as carried in ttrpc's Response.status.code. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type Code = (typeof Code)[keyof typeof Code];

const names = new Map<number, string>(Object.entries(Code).map(([name, value]) => [value, name]));

/** The name of a status code, or `CODE_<n>` for numbers outside the gRPC set. */
export function codeName(code: number): string {
  return names.get(code) ?? `CODE_${code}`;
}

/**
 * An RPC that ended with a non-OK status: thrown by handlers to choose the status they answer,
 * and raised by the client for every failed call (remote status or local failure).
 */
export class TtrpcError extends Error {
  override readonly name = "TtrpcError";

  constructor(
    readonly code: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  get codeName(): string {
    return codeName(this.code);
  }
}
