/**
 * One QEMU process: its exit status and its stdout/stderr, which go to a
 * log file so a failure can quote them. The file is written by QEMU itself
 * (through a shell redirection), not through a pipe to this process, so a
 * guest may outlive the process that started it.
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";

/** Bytes of QEMU's log quoted in error messages. */
const TAIL_BYTES = 2000;

/** A QEMU process, spawned here or found running. */
export interface QemuProcessHandle {
  readonly pid: number;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  /** True once the process has exited. */
  readonly exited: boolean;
  /** Sends SIGKILL unless it has exited, then waits for the exit. */
  kill(): Promise<void>;
  /** The end of QEMU's log, when known. */
  logTail(): Promise<string>;
  /** Stops this process from waiting for QEMU's exit before it can end. */
  unref(): void;
}

/** A spawned QEMU (possibly behind a command prefix that execs it). */
export class QemuProcess implements QemuProcessHandle {
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  readonly #child: Deno.ChildProcess;
  readonly #logPath: string;
  #exited = false;

  private constructor(child: Deno.ChildProcess, logPath: string) {
    this.#child = child;
    this.pid = child.pid;
    this.#logPath = logPath;
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
    if (argv.length === 0) throw new Error(`Cannot start guest "${guest}": empty command`);
    let child: Deno.ChildProcess;
    try {
      // sh replaces itself with the command (which execs QEMU), so the pid is QEMU's. Its $0 is
      // "sh": a program it cannot run is logged as "sh: 1: exec: PROGRAM: not found", not under
      // the log's own path (which read as if the log were missing).
      child = new Deno.Command("sh", {
        args: ["-c", 'log=$1; shift; exec "$@" >>"$log" 2>&1', "sh", logPath, ...argv],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (error) {
      const why = errorMessage(error);
      throw new Error(`Cannot start guest "${guest}": cannot run "${argv[0]}": ${why}`);
    }
    return new QemuProcess(child, logPath);
  }

  get exited(): boolean {
    return this.#exited;
  }

  kill(): Promise<void> {
    return killUnlessExited(this, () => this.#child.kill("SIGKILL"));
  }

  unref(): void {
    this.#child.unref();
  }

  async logTail(): Promise<string> {
    try {
      const text = await Deno.readTextFile(this.#logPath);
      return text.slice(-TAIL_BYTES);
    } catch {
      return "";
    }
  }
}

/**
 * A QEMU this process did not start (found running): it cannot be waited
 * for, so its end is its QMP connection's end, which QEMU closes as it exits.
 */
export class ExternalQemuProcess implements QemuProcessHandle {
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;

  constructor(pid: number, qmpEnded: Promise<void>) {
    this.pid = pid;
    this.status = qmpEnded.then(() => {
      this.#exited = true;
      return { success: true, code: 0, signal: null };
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  kill(): Promise<void> {
    return killUnlessExited(this, () => Deno.kill(this.pid, "SIGKILL"));
  }

  logTail(): Promise<string> {
    return Promise.resolve("");
  }

  unref(): void {}
}

/** {@linkcode QemuProcessHandle.kill}, for either kind: `kill` sends the signal. */
async function killUnlessExited(qemu: QemuProcessHandle, kill: () => void): Promise<void> {
  if (!qemu.exited) {
    try {
      kill();
    } catch {
      // It exited in between.
    }
  }
  await qemu.status;
}
