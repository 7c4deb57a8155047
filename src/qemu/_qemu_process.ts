/**
 * One QEMU process: its exit status and its stdout/stderr, which go to a
 * log file so a failure can quote them.
 *
 * @module
 */

/** Bytes of QEMU's log quoted in error messages. */
const TAIL_BYTES = 2000;

/** A spawned QEMU (possibly behind a command prefix that execs it). */
export class QemuProcess {
  readonly pid: number;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  readonly #child: Deno.ChildProcess;
  readonly #logPath: string;
  readonly #logging: Promise<unknown>;
  #exited = false;

  private constructor(child: Deno.ChildProcess, logPath: string, logging: Promise<unknown>) {
    this.#child = child;
    this.pid = child.pid;
    this.#logPath = logPath;
    this.#logging = logging;
    this.status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  /**
   * Spawns `argv` with stdin closed and stdout/stderr appended to `logPath`.
   *
   * @throws Error naming the guest when the program cannot be run
   */
  static spawn(guest: string, argv: string[], logPath: string): QemuProcess {
    const [program, ...args] = argv;
    if (program === undefined) throw new Error(`Cannot start guest "${guest}": empty command`);
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn();
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      throw new Error(`Cannot start guest "${guest}": cannot run "${program}": ${why}`);
    }
    const out = Deno.openSync(logPath, { write: true, create: true, truncate: true });
    const err = Deno.openSync(logPath, { append: true });
    const logging = Promise.all([
      child.stdout.pipeTo(out.writable),
      child.stderr.pipeTo(err.writable),
    ]).catch(() => {});
    return new QemuProcess(child, logPath, logging);
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Sends SIGKILL unless it has exited, then waits for the exit and the log. */
  async kill(): Promise<void> {
    if (!this.#exited) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // It exited in between.
      }
    }
    await this.status;
    await this.#logging;
  }

  /** The end of QEMU's log (all of it once QEMU has exited). */
  async logTail(): Promise<string> {
    if (this.#exited) await this.#logging;
    try {
      const text = await Deno.readTextFile(this.#logPath);
      return text.slice(-TAIL_BYTES);
    } catch {
      return "";
    }
  }
}
