/**
 * The `receive` command as a child process, possibly inside another
 * network namespace (a command prefix such as `ip netns exec NS`): what a
 * target host runs. Its JSON events are collected from stdout.
 *
 * @module
 */

const RECEIVE = new URL("../cli/receive.ts", import.meta.url);

/** Options of {@linkcode ReceiverProcess.start}. */
export interface ReceiverProcessOptions {
  /** Directory the guests' RAM files are written to. */
  dir: string;
  /** Address to listen on. Default 127.0.0.1 and any free port. */
  listen?: { hostname: string; port?: number };
  /** Runs the receiver, e.g. `["ip", "netns", "exec", "NS"]`. */
  commandPrefix?: string[];
  /** More arguments for `receive` (transport, limits). */
  args?: string[];
  /** Where the receiver's own log lines go. Default: discarded. */
  stderr?: "inherit" | "null";
}

/** An event the receiver printed (see `ReceiverEvent` in src/transfer/receiver.ts). */
export type ReceiverProcessEvent = { event: string } & Record<string, unknown>;

/**
 * A running `receive --json`.
 *
 * Requires `--allow-run` (deno, and the prefix's program).
 */
export class ReceiverProcess implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  /** The port it listens on. */
  readonly port: number;
  /** Its events so far (more arrive while it runs). */
  readonly events: ReceiverProcessEvent[];
  readonly #done: Promise<Deno.CommandStatus>;

  private constructor(
    process: Deno.ChildProcess,
    port: number,
    events: ReceiverProcessEvent[],
    done: Promise<Deno.CommandStatus>,
  ) {
    this.process = process;
    this.port = port;
    this.events = events;
    this.#done = done;
  }

  /**
   * Starts the receiver and waits until it listens.
   *
   * @throws Error when it exits first (with its last words if it printed any)
   */
  static async start(options: ReceiverProcessOptions): Promise<ReceiverProcess> {
    const listen = options.listen ?? { hostname: "127.0.0.1" };
    const args = [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-env=GANGWAY_LIB",
      RECEIVE.pathname,
      "--listen",
      `${listen.hostname}:${listen.port ?? 0}`,
      "--dir",
      options.dir,
      "--json",
      ...options.args ?? [],
    ];
    const [program, ...prefix] = [...options.commandPrefix ?? [], Deno.execPath(), ...args];
    const process = new Deno.Command(program!, {
      args: prefix,
      stdin: "null",
      stdout: "piped",
      stderr: options.stderr ?? "null",
    }).spawn();
    const events: ReceiverProcessEvent[] = [];
    let listening!: (port: number | undefined) => void;
    const port = new Promise<number | undefined>((resolve) => (listening = resolve));
    const reading = (async () => {
      let rest = "";
      for await (const text of process.stdout.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          const event = JSON.parse(line) as ReceiverProcessEvent;
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
        `Cannot start the receiver: it exited with code ${(await done).code} before listening`,
      );
    }
    return new ReceiverProcess(process, found, events, done);
  }

  /** Resolves when the process has ended. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#done;
  }

  /** Stops the receiver (SIGTERM, then SIGKILL after 3 s); safe to call twice. */
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

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
