/**
 * What every command-line entry shares: argument parsing that reports
 * usage errors the same way, and the top-level error handler.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
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
 * `deno task NAME -- ARGS` passes through, is dropped. The options named in
 * `paths.options`, and the positionals with `paths.positionals`, are paths,
 * made what the user meant ({@linkcode callerPath}).
 */
export function parseCli<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
  paths: { options?: readonly (keyof T & string)[]; positionals?: boolean } = {},
): {
  values: ReturnType<typeof parseArgs<{ options: T; allowPositionals: true }>>["values"];
  positionals: string[];
} {
  const rest = args[0] === "--" ? args.slice(1) : args;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  const values: Record<string, unknown> = parsed.values;
  for (const name of paths.options ?? []) {
    const value = values[name];
    if (typeof value === "string") values[name] = callerPath(value);
  }
  const positionals = paths.positionals ? parsed.positionals.map(callerPath) : parsed.positionals;
  return { values: parsed.values, positionals };
}

/**
 * A path as the user meant it: a relative one from the directory the
 * command was run in. `deno task NAME` runs a task in the project's folder
 * (where deno.json is) and names the user's directory in `INIT_CWD`; so a
 * relative path is taken from `INIT_CWD` when this process runs in the
 * project's folder and may read that variable (`--allow-env=INIT_CWD`, as
 * the tasks have it), and from the working directory otherwise: a plain
 * `deno run` runs where the user is, whatever `INIT_CWD` an outer task or
 * npm script left in its environment.
 */
export function callerPath(path: string): string {
  if (path === "" || isAbsolute(path) || PROJECT_DIR === undefined) return path;
  // Queried first: a plain `deno run` at a terminal would otherwise ask the user for it.
  const permission = Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" });
  const dir = permission.state === "granted" ? Deno.env.get("INIT_CWD") : undefined;
  if (!dir) return path;
  let cwd: string;
  try {
    cwd = Deno.cwd();
  } catch {
    return path; // not permitted to know: relative to it, as the system takes it
  }
  return resolve(cwd) === PROJECT_DIR ? resolve(dir, path) : path;
}

/** The project's folder, where `deno task` runs; none when this module was imported by URL. */
const PROJECT_DIR = import.meta.url.startsWith("file:")
  ? resolve(fileURLToPath(new URL("../../", import.meta.url)))
  : undefined;

/**
 * Runs a command's main function: prints its error on stderr and exits
 * with 2 for usage errors or with `failureCode` for anything else.
 * `--help` (or `-h`) anywhere among the arguments prints the usage and
 * exits with 0.
 */
export async function runMain(main: () => Promise<void> | void, usage: string, failureCode = 1) {
  if (Deno.args.some((arg) => arg === "--help" || arg === "-h")) {
    console.log(usage);
    Deno.exit(0);
  }
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

/** The signals a command stops on, with the exit status of each: 128 + its number. */
const STOP_SIGNALS = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

/**
 * Ctrl-C (SIGINT), SIGTERM and SIGHUP as an abort: the work stops as it
 * would on a lost peer, and cleans up after itself; the same signal again
 * exits at once. `announce` says, as the first one comes, what stopping
 * means to this command. Until disposed of.
 *
 * @returns the abort signal, and the exit status of the signal that came (undefined before)
 */
export function stopOnSignals(
  announce: (signal: Deno.Signal) => void,
): { readonly signal: AbortSignal; readonly exitCode: number | undefined } & Disposable {
  const stop = new AbortController();
  let exitCode: number | undefined;
  const removers = Object.entries(STOP_SIGNALS).map(([name, code]) => {
    const signal = name as Deno.Signal;
    const listener = () => {
      if (exitCode !== undefined) Deno.exit(code);
      exitCode = code;
      announce(signal);
      stop.abort(new Error(`Interrupted (${signal})`));
    };
    Deno.addSignalListener(signal, listener);
    return () => Deno.removeSignalListener(signal, listener);
  });
  return {
    signal: stop.signal,
    get exitCode() {
      return exitCode;
    },
    [Symbol.dispose]() {
      for (const remove of removers) remove();
    },
  };
}
