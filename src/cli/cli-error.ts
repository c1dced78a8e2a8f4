/**
 * An error the CLI reports as is (no stack) with its exit code: 2 when the input names nothing usable
 * (a container that does not exist, an archive that is not one), 1 when the operation itself failed.
 */
export class CliError extends Error {
  override readonly name = "CliError";

  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

/** The yargs handlers' end: print the message of what went wrong and leave with its exit code. */
export function exitWithError(command: string, err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`kybernate ${command}: ${message}\n`);
  process.exit(err instanceof CliError ? err.exitCode : 1);
}
