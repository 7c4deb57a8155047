/**
 * Runs a gangway command-line entry in a child Deno, as a user would.
 *
 * @module
 */

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
  const denoArgs = ["run", ...permissions, new URL(`src/cli/${name}.ts`, ROOT).pathname, ...args];
  const [cmd, cmdArgs] = options.withoutDacOverride
    ? ["setpriv", [
      "--bounding-set=-dac_override,-dac_read_search",
      "--",
      Deno.execPath(),
      ...denoArgs,
    ]]
    : [Deno.execPath(), denoArgs];
  const output = await new Deno.Command(cmd, {
    args: cmdArgs,
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
export interface ReceiverProcess extends AsyncDisposable {
  process: Deno.ChildProcess;
  port: number;
  /** JSON events printed so far (and more as they come). */
  events: Record<string, unknown>[];
  /** Waits for the process to end. */
  exited(): Promise<Deno.CommandStatus>;
}

/** Starts `receive --json --listen 127.0.0.1:0 --dir DIR ARGS` and waits until it listens. */
export async function spawnReceiver(dir: string, args: string[] = []): Promise<ReceiverProcess> {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-env=GANGWAY_LIB",
      new URL("src/cli/receive.ts", ROOT).pathname,
      "--listen",
      "127.0.0.1:0",
      "--dir",
      dir,
      "--json",
      ...args,
    ],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const events: Record<string, unknown>[] = [];
  let listening!: (port: number) => void;
  const port = new Promise<number>((resolve) => (listening = resolve));
  const lines = process.stdout.pipeThrough(new TextDecoderStream());
  const collected = (async () => {
    let rest = "";
    for await (const text of lines) {
      rest += text;
      const parts = rest.split("\n");
      rest = parts.pop()!;
      for (const line of parts) {
        const event = JSON.parse(line);
        events.push(event);
        if (event.event === "listening") listening(Number(String(event.address).split(":").at(-1)));
      }
    }
  })();
  const status = process.status.then(async (s) => {
    await collected;
    listening(0);
    return s;
  });
  const found = await port;
  if (found === 0) throw new Error("receive exited before listening");
  return {
    process,
    port: found,
    events,
    exited: () => status,
    async [Symbol.asyncDispose]() {
      try {
        process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await status;
    },
  };
}
