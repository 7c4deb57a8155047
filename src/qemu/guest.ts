/**
 * A QEMU guest run by gangway: RAM in a shared file, QMP on a unix socket,
 * serial console in a log file. Starts migration sources (booting) and
 * destinations (paused, waiting for an incoming migration); how QEMU is
 * launched for them is in `guest_launch.ts`.
 *
 * @module
 */
import { dirname } from "node:path";
import { withTimeout } from "../_delay.ts";
import { ExternalQemuProcess, type QemuProcessHandle } from "./_qemu_process.ts";
import { type Heartbeat, readHeartbeat, waitForHeartbeat } from "./heartbeat.ts";
import { QmpClient } from "./qmp.ts";
import { findQemuProcess } from "./discover.ts";
import type { QemuMachine } from "./qemu_args.ts";
import { queryRam, type RamBackend } from "./ram_backend.ts";
import {
  defaultRamPath,
  type DestinationOptions,
  type GuestPaths,
  type LaunchInstance,
  launchQemu,
  type QemuGuestOptions,
  removeFile,
  sourceMachine,
} from "./guest_launch.ts";

/** Options of {@linkcode QemuGuest.close}. */
export interface CloseOptions {
  /** Remove the RAM file too (only once its content is no longer needed). Default false. */
  removeRam?: boolean;
  /**
   * Remove the guest's copy-on-write overlays too (disks with a base; never
   * a base image). Only once no QEMU uses them: after a migration on shared
   * storage the destination does. Default false.
   */
  removeDisk?: boolean;
  /** Time QEMU gets to quit before it is killed. Default 5000 ms. */
  timeoutMs?: number;
}

/** What `query-status` says. */
export interface GuestStatus {
  /** QEMU run state: `running`, `paused`, `inmigrate`, `postmigrate`, `prelaunch`... */
  status: string;
  /** True when the vCPUs run. */
  running: boolean;
}

/**
 * A running QEMU. Close it with {@linkcode QemuGuest.close} (or `await
 * using`); closing quits QEMU, kills it if it does not exit, and removes
 * the RAM file only when asked.
 *
 * Requires `--allow-run` (QEMU and `test`), `--allow-net` (the QMP unix
 * socket), `--allow-read` and `--allow-write` (run directory, RAM file).
 *
 * @example
 * ```ts
 * import { QemuGuest } from "./guest.ts";
 * import { ensureGuestImage } from "./guest_image.ts";
 *
 * const image = await ensureGuestImage();
 * await using guest = await QemuGuest.start({ name: "vm1", memoryMiB: 128, image });
 * await guest.waitUntilBooted();
 * console.log(await guest.ramBackend()); // { path: "/dev/shm/gangway-vm1", size: 134217728, ... }
 * ```
 */
export class QemuGuest implements AsyncDisposable {
  /** Guest name. */
  readonly name: string;
  /** What a destination must match. */
  readonly machine: QemuMachine;
  /** The RAM file (never made when `machine.anonymousRam`). */
  readonly ramPath: string;
  /** Directory of the QMP socket and logs. */
  readonly runDir: string;
  /** The serial console log (heartbeats). */
  readonly serialLog: string;
  /** The QMP connection. */
  readonly qmp: QmpClient;
  #process: QemuProcessHandle;
  #ownsRunDir: boolean;
  #qmpPath: string;
  #lastStopAt: number | undefined;
  #lastResumeAt: number | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    name: string,
    machine: QemuMachine,
    paths: GuestPaths,
    process: QemuProcessHandle,
    qmp: QmpClient,
  ) {
    this.name = name;
    this.machine = machine;
    this.ramPath = paths.ramPath;
    this.runDir = paths.runDir;
    this.serialLog = paths.serialLog;
    this.#qmpPath = paths.qmpPath;
    this.#ownsRunDir = paths.ownsRunDir;
    this.#process = process;
    this.qmp = qmp;
    qmp.on("STOP", (event) => (this.#lastStopAt = event.receivedAt));
    qmp.on("RESUME", (event) => (this.#lastResumeAt = event.receivedAt));
  }

  /**
   * Starts a guest that boots (a migration source). Returns once QMP
   * answers; {@linkcode waitUntilBooted} waits for the workload.
   *
   * @throws Error naming the guest when the RAM file exists, QEMU fails to
   * start or its QMP socket does not answer
   */
  static async start(options: QemuGuestOptions): Promise<QemuGuest> {
    const { machine, ramPath, overlay } = await sourceMachine(options);
    try {
      return await QemuGuest.#launch(machine, { ...options, ramPath, incoming: false });
    } catch (error) {
      if (overlay) await removeFile(overlay).catch(() => {});
      throw error;
    }
  }

  /**
   * Starts a destination for a guest with this machine: its own RAM file of
   * the same size and backend id, paused (`-S`), waiting for
   * `migrate-incoming` (`-incoming defer`). A stale file at its RAM path is
   * removed first: QEMU would reuse it as is, and it never zeroes it.
   *
   * @throws Error naming the guest when QEMU fails to start
   */
  static async startDestination(
    machine: QemuMachine,
    options: DestinationOptions,
  ): Promise<QemuGuest> {
    const ramPath = options.ramPath ?? defaultRamPath(options.name);
    await removeFile(ramPath);
    return await QemuGuest.#launch(machine, { ...options, ramPath, incoming: true });
  }

  static async #launch(machine: QemuMachine, instance: LaunchInstance): Promise<QemuGuest> {
    const { process, qmp, paths } = await launchQemu(machine, instance);
    return new QemuGuest(instance.name, machine, paths, process, qmp);
  }

  /**
   * Takes control of a QEMU that runs already (started by another gangway
   * process, or by hand following docs/qemu.md), found by its QMP socket.
   * Closing it quits that QEMU; its run directory is left alone.
   *
   * A QEMU of another mount namespace (a simulated host) is reached
   * through `/proc/PID/root`: give that prefix as `root` and the socket's
   * path under it; the guest's files are then read through it too.
   *
   * @throws Error naming the socket when no QEMU serves it, or when its
   * command line is not one gangway can migrate
   */
  static async attach(qmpPath: string, options: { root?: string } = {}): Promise<QemuGuest> {
    const root = options.root ?? "";
    if (!qmpPath.startsWith(root)) {
      throw new Error(`QMP socket "${qmpPath}" is not under "${root}"`);
    }
    const found = await findQemuProcess(qmpPath.slice(root.length), {
      otherMountNamespace: root !== "",
    });
    const { machine, instance } = found.commandLine;
    const qmp = await QmpClient.connect(qmpPath, { guest: instance.name });
    const process = new ExternalQemuProcess(found.pid, qmp.ended);
    const paths = {
      ramPath: root + instance.ramPath,
      runDir: dirname(qmpPath),
      serialLog: root + instance.serialLog,
      qmpPath,
      ownsRunDir: false,
    };
    return new QemuGuest(instance.name, machine, paths, process, qmp);
  }

  /** QEMU's process id (QEMU's own when the command prefix execs it). */
  get pid(): number {
    return this.#process.pid;
  }

  /** True until the QEMU process has exited. */
  get alive(): boolean {
    return !this.#process.exited;
  }

  /** Resolves with QEMU's exit status once it has exited. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#process.status;
  }

  /** When QEMU last reported STOP (vCPUs paused), on the `performance.now()` clock. */
  get lastStopAt(): number | undefined {
    return this.#lastStopAt;
  }

  /** When QEMU last reported RESUME, on the `performance.now()` clock. */
  get lastResumeAt(): number | undefined {
    return this.#lastResumeAt;
  }

  /** The end of QEMU's own stdout/stderr, for error messages. */
  async qemuLogTail(): Promise<string> {
    return await this.#process.logTail();
  }

  /**
   * Waits for the first heartbeat of the workload.
   *
   * @throws Error when QEMU exits or no heartbeat comes in time
   */
  async waitUntilBooted(timeoutMs = 60_000): Promise<Heartbeat> {
    return await this.waitForHeartbeat({ after: 0, timeoutMs });
  }

  /** The guest's last heartbeat on its serial console, if any. */
  async heartbeat(): Promise<Heartbeat | undefined> {
    return await readHeartbeat(this.serialLog);
  }

  /**
   * Waits for a heartbeat with a counter above `after`.
   *
   * @throws Error when QEMU exits or none comes in time
   */
  async waitForHeartbeat(options: { after?: number; timeoutMs?: number } = {}): Promise<Heartbeat> {
    return await waitForHeartbeat(this.serialLog, {
      ...options,
      abortReason: () => this.alive ? undefined : `QEMU of guest "${this.name}" exited`,
    });
  }

  /** Runs `query-status` (answered within `timeoutMs`, by default the QMP client's). */
  async status(timeoutMs?: number): Promise<GuestStatus> {
    const { status, running } = await this.qmp.execute<GuestStatus>("query-status", undefined, {
      timeoutMs,
    });
    return { status, running };
  }

  /** Pauses the vCPUs (`stop`). */
  async pause(): Promise<void> {
    await this.qmp.execute("stop");
  }

  /** Resumes the vCPUs (`cont`). */
  async resume(): Promise<void> {
    await this.qmp.execute("cont");
  }

  /** The guest's RAM file and size, as QEMU reports them over QMP. */
  async ramBackend(): Promise<RamBackend> {
    return await queryRam(this.qmp, this.machine.backendId);
  }

  /** Kills QEMU at once (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    await this.#process.kill();
  }

  /**
   * Quits QEMU (QMP `quit`, SIGKILL after `timeoutMs`), closes QMP and
   * removes the run directory when it was created here, and the RAM file
   * when asked. Safe to call twice.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#close(options.timeoutMs ?? 5_000);
    return this.#closing.then(async () => {
      if (options.removeRam) await removeFile(this.ramPath);
      if (options.removeDisk) { for (const path of this.overlays) await removeFile(path); }
    });
  }

  /** The guest's copy-on-write overlays: its disks that have a base. */
  get overlays(): string[] {
    return (this.machine.disks ?? []).flatMap((disk) => disk.base === undefined ? [] : [disk.path]);
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.alive) {
      // quit's answer may race with QEMU closing the socket: either is fine.
      await this.qmp.execute("quit", undefined, { timeoutMs: Math.min(timeoutMs, 2_000) })
        .catch(() => {});
      await withTimeout(this.#process.status, timeoutMs, () => new Error("quit timed out"))
        .catch(() => {});
    }
    await this.#process.kill();
    await this.qmp.close();
    await removeFile(this.#qmpPath);
    if (this.#ownsRunDir) await Deno.remove(this.runDir, { recursive: true }).catch(() => {});
  }

  /**
   * Lets go of QEMU without stopping it: closes the QMP connection (QMP
   * serves one client at a time, so another process can attach) and leaves
   * the run directory and RAM file in place. The guest object is unusable
   * afterwards.
   */
  async detach(): Promise<void> {
    this.#ownsRunDir = false;
    this.#process.unref();
    this.#closing ??= this.qmp.close();
    await this.#closing;
  }

  /** Same as `close()`: quits QEMU and keeps the RAM file. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
