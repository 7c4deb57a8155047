/**
 * Runs a gangway command-line entry in a child Deno, as a user would.
 *
 * @module
 */
import { ReceiverProcess } from "../src/target/receiver_process.ts";

/** What a command printed and how it ended. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode runCli}. */
export interface RunCliOptions {
  /** Deno permission flags of the child. */
  permissions?: string[];
  /** Run without the capabilities that let root read any file (to test "unreadable"). */
  withoutDacOverride?: boolean;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Its working directory (default: this process's). */
  cwd?: string;
}

const ROOT = new URL("../", import.meta.url);

/** Runs `deno run PERMISSIONS src/cli/NAME.ts ARGS` and collects its output. */
export async function runCli(
  name: string,
  args: string[],
  options: RunCliOptions = {},
): Promise<CliResult> {
  const permissions = options.permissions ??
    ["--allow-ffi", "--allow-read", "--allow-env=GANGWAY_LIB"];
  const denoArgs = ["run", ...permissions, new URL(`src/cli/${name}.ts`, ROOT).href, ...args];
  const [cmd, cmdArgs] = options.withoutDacOverride
    ? ["setpriv", [
      "--bounding-set=-dac_override,-dac_read_search",
      "--",
      Deno.execPath(),
      ...denoArgs,
    ]]
    : [Deno.execPath(), denoArgs];
  return await runCommand(cmd, cmdArgs, { env: options.env, cwd: options.cwd });
}

/** Runs a command to its end (colours off) and collects its output. */
export async function runCommand(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<CliResult> {
  const output = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A `receive` command running in a child process. */
export interface SpawnedReceiver extends AsyncDisposable {
  process: Deno.ChildProcess;
  port: number;
  /** JSON events printed so far (and more as they come). */
  events: Record<string, unknown>[];
  /** Waits for the process to end. */
  exited(): Promise<Deno.CommandStatus>;
}

/**
 * Starts `receive --json --listen 127.0.0.1:0 --dir DIR ARGS` (as
 * ReceiverProcess does) and waits until it listens; disposing kills it.
 */
export async function spawnReceiver(dir: string, args: string[] = []): Promise<SpawnedReceiver> {
  const receiver = await ReceiverProcess.start({ dir, args });
  return {
    process: receiver.process,
    port: receiver.port,
    events: receiver.events,
    exited: () => receiver.exited,
    async [Symbol.asyncDispose]() {
      try {
        receiver.process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await receiver.exited;
    },
  };
}
