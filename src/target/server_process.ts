/**
 * A gangway server command (`receive`, `agent`) as a child process,
 * possibly behind a command prefix (`ip netns exec NS`, or a whole
 * simulated host): what a target host runs. Its JSON events are collected
 * from stdout; it is ready once it says where it listens.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** An event the server printed (`{"event": ...}`). */
export type ServerEvent = { event: string } & Record<string, unknown>;

/** Options of {@linkcode ServerProcess.start}. */
export interface ServerProcessOptions {
  /** The command's module, e.g. `new URL("../cli/agent.ts", import.meta.url)`. */
  script: URL;
  /** Deno's permission flags for it. */
  permissions: readonly string[];
  /** Its arguments (`--json` is added). */
  args: readonly string[];
  /** Runs it, e.g. `["ip", "netns", "exec", "NS"]`; it must exec its command. */
  commandPrefix?: readonly string[];
  /** Where its own log lines go. Default: discarded. */
  stderr?: "inherit" | "null";
  /** What it is, for errors: "the receiver". */
  what: string;
}

/**
 * A running server command.
 *
 * Requires `--allow-run` (deno, and the prefix's program).
 */
export class ServerProcess implements AsyncDisposable {
  /** The child. */
  readonly process: Deno.ChildProcess;
  /** The port it listens on. */
  readonly port: number;
  /** Its events so far (more arrive while it runs). */
  readonly events: ServerEvent[];
  readonly #done: Promise<Deno.CommandStatus>;

  private constructor(
    process: Deno.ChildProcess,
    port: number,
    events: ServerEvent[],
    done: Promise<Deno.CommandStatus>,
  ) {
    this.process = process;
    this.port = port;
    this.events = events;
    this.#done = done;
  }

  /**
   * Starts the server and waits until it listens.
   *
   * @throws Error when it exits first
   */
  static async start(options: ServerProcessOptions): Promise<ServerProcess> {
    const argv = [
      ...options.commandPrefix ?? [],
      Deno.execPath(),
      "run",
      ...options.permissions,
      fileURLToPath(options.script),
      ...options.args,
      "--json",
    ];
    const process = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: options.stderr ?? "null",
    }).spawn();
    const events: ServerEvent[] = [];
    let listening!: (port: number | undefined) => void;
    const port = new Promise<number | undefined>((resolve) => (listening = resolve));
    const reading = (async () => {
      let rest = "";
      for await (const text of process.stdout.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          const event = JSON.parse(line) as ServerEvent;
          events.push(event);
          if (event.event === "listening") {
            listening(Number(String(event.address).split(":").at(-1)));
          }
        }
      }
    })().catch(() => {});
    const done = process.status.then(async (status) => {
      await reading;
      listening(undefined);
      return status;
    });
    const found = await port;
    if (found === undefined) {
      throw new Error(
        `Cannot start ${options.what}: it exited with code ${(await done).code} before listening`,
      );
    }
    return new ServerProcess(process, found, events, done);
  }

  /** Resolves when the process has ended. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#done;
  }

  /** Stops the server (SIGTERM, then SIGKILL after 3 s); safe to call twice. */
  async stop(): Promise<void> {
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      try {
        this.process.kill(signal);
      } catch {
        break; // already gone
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ended = await Promise.race([
        this.#done.then(() => true),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), 3000))),
      ]);
      clearTimeout(timer);
      if (ended) break;
    }
    await this.#done;
  }

  /** Same as {@linkcode stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
