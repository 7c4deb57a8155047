/**
 * What every command-line entry shares: argument parsing that reports
 * usage errors the same way, and the top-level error handler.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { errorMessage } from "../_errors.ts";

/** A mistake in how the command was called: exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses args with node:util's parseArgs (strict). A leading "--", which
 * `deno task NAME -- ARGS` passes through, is dropped.
 */
export function parseCli<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
): {
  values: ReturnType<typeof parseArgs<{ options: T; allowPositionals: true }>>["values"];
  positionals: string[];
} {
  const rest = args[0] === "--" ? args.slice(1) : args;
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values, positionals };
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
}

/**
 * Runs a command's main function: prints its error on stderr and exits
 * with 2 for usage errors or with `failureCode` for anything else.
 */
export async function runMain(main: () => Promise<void> | void, usage: string, failureCode = 1) {
  try {
    await main();
  } catch (error) {
    const message = errorMessage(error);
    console.error(`error: ${message}`);
    if (error instanceof UsageError) {
      console.error(usage);
      Deno.exit(2);
    }
    Deno.exit(failureCode);
  }
}
