/**
 * What a target agent holds across its connections: its options, its
 * files, the one gang under way, and the guests that moved to this host
 * and run here (kept after their gang ended, or found when the agent
 * started; the agent no longer holds their QMP socket, and removes their
 * RAM file and run directory once their QEMU exits).
 *
 * @module
 */
import { join } from "node:path";
import type { ReceiverOptions } from "../transfer/receiver.ts";
import type { Heartbeat } from "../qemu/heartbeat.ts";
import type { DestinationState } from "../qemu/destination.ts";
import { QmpClient } from "../qemu/qmp.ts";
import { findQemus } from "../qemu/discover.ts";
import { readHeartbeat } from "../qemu/heartbeat.ts";
import { isRunning, killAndWait } from "../_processes.ts";
import { pathExists } from "../_path_exists.ts";
import { AgentGang, type GangDestination, type GangMachine, RESUMED_MARK } from "./agent_gang.ts";
import { FileStore } from "./agent_files.ts";

/** How a target agent runs. */
export interface AgentOptions {
  /** Directory of the destinations' RAM files (a tmpfs such as /dev/shm/gangway). */
  dir: string;
  /** Directory of its own files: destinations' sockets and logs, files sources sent. */
  runDir: string;
  /** The token a source must present; none: any peer that can connect may use the agent. */
  token?: string;
  /** Read-only directory of kernels and initrds this host has (found by name, checked by hash). */
  imagesDir?: string;
  /** Most guests in one gang. */
  maxGuests: number;
  /** Most RAM of one gang, in MiB. */
  maxMemoryMiB: number;
  /** Accelerators it starts. Default tcg and kvm. */
  accelerators?: readonly string[];
  /** Directories of storage shared with the sources: where a guest's disks may be. Default none. */
  sharedDisks?: readonly string[];
  /**
   * Directory of the overlays of copied disks (`DIR/NAME/diskN.qcow2`); a
   * guest's stays after its QEMU exits. Default `RUN_DIR/disks`.
   */
  diskDir?: string;
  /** The QEMU program. */
  qemuBinary: string;
  /**
   * Keep the agent's CPU priority: by default a gang's receiver gets the
   * weight of one thread per guest, as QEMU's incoming migrations would
   * (src/cpu_share.ts; root only), and its guests run at the usual one.
   */
  keepPriority?: boolean;
  /** Longest time from a connection to its first frame. */
  handshakeTimeoutMs: number;
  /** Longest silence of a source's control connection while its gang is under way. */
  idleTimeoutMs: number;
  /**
   * Authenticated control connections open at once from one address.
   * Default {@linkcode MAX_CONTROL_PER_ADDRESS}.
   */
  maxControlPerAddress?: number;
  /** Limits of the RAM transfer, as the `receive` command has them. */
  receiver?: Omit<ReceiverOptions, "dir" | "token" | "log">;
  /** Receives a line for each event worth a log. */
  log?: (event: AgentEvent) => void;
}

/** Something the agent did, for its log. */
export type AgentEvent = { event: string; [field: string]: unknown };

/** A guest that moved here and runs, as the agent reports it. */
export interface KeptGuest {
  /** The guest's name. */
  name: string;
  /** Its QEMU's process id. */
  pid: number;
  /** Its QMP socket on this host. */
  qmpPath: string;
  /** Its serial log on this host. */
  serialLog: string;
  /** Its RAM file on this host. */
  ramPath: string;
  /** False once its QEMU has exited. */
  alive: boolean;
  /** Its last heartbeat, when it prints them. */
  heartbeat?: Heartbeat;
}

/**
 * Default of `maxControlPerAddress`: a source holds one control connection
 * (a tool that lists the kept guests meanwhile, a second), two sources on
 * one host four; a peer that opens more without end would hold as many
 * buffers and sessions.
 */
export const MAX_CONTROL_PER_ADDRESS = 8;

/** How often the agent looks whether a guest it found at start-up (not its child) still runs. */
const FOUND_POLL_MS = 1_000;

/** A guest that moved here and runs, as the agent keeps track of it. */
interface KeptEntry {
  name: string;
  pid: number;
  /** Its run directory (QMP socket, serial log), removed once it exits. */
  runDir: string;
  serialLog: string;
  ramPath: string;
  /** False once its QEMU has exited. */
  alive(): boolean;
}

/** The agent's state. */
export class AgentHost {
  /** Its options. */
  readonly options: AgentOptions;
  /** Its kernels, initrds and base images. */
  readonly files: FileStore;
  /** Where copied disks' overlays go. */
  readonly diskDir: string;
  #gang: AgentGang | undefined;
  #starting = false;
  readonly #kept = new Map<string, KeptEntry>();
  /** Looks after the guests found at start-up, which are not the agent's children. */
  #foundWatch: ReturnType<typeof setInterval> | undefined;
  readonly #connections = new Set<{ close(): void }>();
  /** Open authenticated control connections, by peer address. */
  readonly #controls = new Map<string, number>();

  /** The state of an agent with these options. */
  constructor(options: AgentOptions) {
    this.options = options;
    this.files = new FileStore({
      imagesDir: options.imagesDir,
      cacheDir: join(options.runDir, "files"),
    });
    this.diskDir = options.diskDir ?? join(options.runDir, "disks");
  }

  /** Remembers an open connection, to be closed when the agent stops. */
  track(connection: { close(): void }): void {
    this.#connections.add(connection);
  }

  /** Forgets a connection that ended. */
  untrack(connection: { close(): void }): void {
    this.#connections.delete(connection);
  }

  /**
   * Counts an authenticated control connection from `address` until the
   * returned handle is disposed of.
   *
   * @throws Error when that address holds as many as it may
   */
  openControl(address: string): Disposable {
    const max = this.options.maxControlPerAddress ?? MAX_CONTROL_PER_ADDRESS;
    const open = this.#controls.get(address) ?? 0;
    if (open >= max) {
      throw new Error(
        `Refused: ${address} has ${open} control connections open, the most one address may`,
      );
    }
    this.#controls.set(address, open + 1);
    let closed = false;
    return {
      [Symbol.dispose]: () => {
        if (closed) return;
        closed = true;
        const left = this.#controls.get(address)! - 1;
        if (left === 0) this.#controls.delete(address);
        else this.#controls.set(address, left);
      },
    };
  }

  /** Closes every open connection: the agent stops. */
  closeConnections(): void {
    for (const connection of this.#connections) connection.close();
  }

  /** Logs an event. */
  log(event: AgentEvent): void {
    this.options.log?.(event);
  }

  /** True while a gang is being prepared or under way. */
  get busy(): boolean {
    return this.#gang !== undefined || this.#starting;
  }

  /** The gang under way, if any. */
  get gang(): AgentGang | undefined {
    return this.#gang;
  }

  /**
   * Refuses names taken by a guest that runs here, by a RAM file in the
   * directory or by copied disks in the disk directory: a gang never
   * overwrites a guest.
   */
  async claimNames(names: readonly string[]): Promise<void> {
    for (const name of names) {
      if (this.#kept.has(name)) {
        throw new Error(`Cannot take guest "${name}": a guest of that name runs here`);
      }
      if (await exists(join(this.options.dir, name))) {
        throw new Error(
          `Cannot take guest "${name}": the target directory holds a RAM file of that name`,
        );
      }
      if (await exists(join(this.diskDir, name))) {
        throw new Error(
          `Cannot take guest "${name}": the disk directory holds disks of a guest of that name`,
        );
      }
    }
  }

  /**
   * Starts the destinations of a new gang.
   *
   * @throws Error when a gang is under way ("busy") or a destination cannot start
   */
  async startGang(machines: readonly GangMachine[]): Promise<AgentGang> {
    if (this.busy) throw new Error("Target agent is busy with another gang");
    this.#starting = true;
    try {
      this.#gang = await AgentGang.start(machines, {
        dir: this.options.dir,
        runDir: join(this.options.runDir, "guests"),
        diskDir: this.diskDir,
      });
      this.log({ event: "prepared", guests: this.#gang.names });
      return this.#gang;
    } finally {
      this.#starting = false;
    }
  }

  /** The gang is over (released, discarded or abandoned): the agent is free for the next. */
  endGang(): void {
    this.#gang?.closeConnections();
    this.#gang = undefined;
  }

  /**
   * Keeps destinations that took over their guest: lets go of their QMP
   * socket and removes their files once their QEMU exits.
   */
  async keep(destinations: readonly GangDestination[]): Promise<KeptGuest[]> {
    const entries: KeptEntry[] = [];
    for (const { guest, runDir } of destinations) {
      const entry: KeptEntry = {
        name: guest.name,
        pid: guest.pid,
        runDir,
        serialLog: guest.serialLog,
        ramPath: guest.ramPath,
        alive: () => guest.alive,
      };
      this.#kept.set(guest.name, entry);
      entries.push(entry);
      const exited = guest.exited;
      await guest.detach();
      exited.then(() => this.#forget(entry));
    }
    return await Promise.all(entries.map((entry) => this.#describe(entry)));
  }

  /** The guests that moved here and still run (or just exited). */
  async keptGuests(): Promise<KeptGuest[]> {
    return await Promise.all([...this.#kept.values()].map((entry) => this.#describe(entry)));
  }

  /** A guest that exited: its RAM file and run directory go (a copied disk stays: its disk). */
  async #forget(entry: KeptEntry): Promise<void> {
    if (this.#kept.get(entry.name) !== entry) return;
    this.#kept.delete(entry.name);
    await Deno.remove(entry.ramPath).catch(() => {});
    await Deno.remove(entry.runDir, { recursive: true }).catch(() => {});
    this.log({ event: "exited", guest: entry.name });
  }

  /**
   * What a guest that moved here does now: asked over its QMP socket for a
   * moment (QMP serves one client: while another holds it, the status is
   * "unknown").
   *
   * @returns undefined when no such guest moved here
   */
  async keptState(name: unknown): Promise<DestinationState | undefined> {
    const kept = typeof name === "string" ? this.#kept.get(name) : undefined;
    if (!kept) return undefined;
    const heartbeat = await readHeartbeat(kept.serialLog).catch(() => undefined);
    if (!kept.alive()) return { alive: false, status: "exited", running: false, heartbeat };
    try {
      const qmp = await QmpClient.connect(join(kept.runDir, `${kept.name}.qmp`), {
        guest: kept.name,
      });
      try {
        const { status, running } = await qmp.execute<{ status: string; running: boolean }>(
          "query-status",
        );
        return { alive: true, status, running, heartbeat };
      } finally {
        await qmp.close();
      }
    } catch {
      return { alive: kept.alive(), status: "unknown", running: false, heartbeat };
    }
  }

  /**
   * Cleans up after an agent of this run directory that died during a
   * gang: destinations that never took over their guest are killed and
   * their files removed. Guests that moved here earlier are left alone and
   * kept track of (listed in `guests`, their files removed once they
   * exit); one that exited while no agent ran has its files removed now.
   *
   * Requires `--allow-run` (ps, cat), `--allow-read`, `--allow-write`, `--allow-net`.
   *
   * @returns The names of the destinations removed
   */
  async recoverLeftovers(): Promise<string[]> {
    const guestsDir = join(this.options.runDir, "guests");
    const removed: string[] = [];
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(guestsDir));
    } catch {
      return removed; // no gang ever ran here
    }
    const { usable } = await findQemus();
    for (const { name, isDirectory } of entries) {
      if (!isDirectory) continue;
      const runDir = join(guestsDir, name);
      // Found by its command line, not by QMP: a busy QMP socket must not make it look gone.
      const qmpPath = join(runDir, `${name}.qmp`);
      const leftover = usable.find((q) => q.commandLine.instance.qmpPath === qmpPath);
      // Not by program name only: a QEMU started as another program (--qemu-binary) is one too.
      const pid = leftover?.pid ?? await pidServing(qmpPath);
      if (await exists(join(runDir, RESUMED_MARK))) {
        // It took over its guest: whatever it does now (paused, QMP held by someone), it is one.
        const entry: KeptEntry = {
          name,
          pid: pid ?? 0,
          runDir,
          serialLog: leftover?.commandLine.instance.serialLog ?? join(runDir, `${name}.serial.log`),
          ramPath: leftover?.commandLine.instance.ramPath ?? join(this.options.dir, name),
          // Until the watch sees it gone (and forgets it): not the agent's child, so not waited for.
          alive: () => true,
        };
        this.#kept.set(name, entry);
        this.log({ event: "found", guest: name, pid });
        continue;
      }
      if (pid !== undefined) await killAndWait([pid]);
      await Deno.remove(join(this.options.dir, name)).catch(() => {});
      await Deno.remove(runDir, { recursive: true }).catch(() => {});
      await Deno.remove(join(this.diskDir, name), { recursive: true }).catch(() => {});
      removed.push(name);
    }
    if (removed.length > 0) this.log({ event: "recovered", removed });
    await this.#watchFound();
    return removed;
  }

  /** Forgets the found guests that exited, now and every {@linkcode FOUND_POLL_MS}. */
  async #watchFound(): Promise<void> {
    const found = [...this.#kept.values()];
    if (found.length === 0) return;
    const check = async () => {
      for (const entry of found) {
        if (this.#kept.get(entry.name) !== entry) continue; // forgotten already
        const qmpPath = join(entry.runDir, `${entry.name}.qmp`);
        if (!(await qemuRuns(entry.pid, qmpPath))) await this.#forget(entry);
      }
    };
    await check();
    this.#foundWatch = setInterval(check, FOUND_POLL_MS);
    Deno.unrefTimer(this.#foundWatch);
  }

  /** Ends the gang under way, if any (the agent stops); kept guests run on. */
  async close(): Promise<void> {
    clearInterval(this.#foundWatch);
    await this.#gang?.end(true);
    this.#gang = undefined;
  }

  async #describe(entry: KeptEntry): Promise<KeptGuest> {
    return {
      name: entry.name,
      pid: entry.pid,
      qmpPath: join(entry.runDir, `${entry.name}.qmp`),
      serialLog: entry.serialLog,
      ramPath: entry.ramPath,
      alive: entry.alive(),
      heartbeat: await readHeartbeat(entry.serialLog).catch(() => undefined),
    };
  }
}

/**
 * Whether the QEMU of this pid still runs (not a zombie) and is the one of
 * this QMP socket (not a later process that got its pid). Read from /proc,
 * without running anything: it is asked every second.
 */
async function qemuRuns(pid: number, qmpPath: string): Promise<boolean> {
  if (pid <= 0 || !isRunning(pid)) return false;
  try {
    const argv = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    const qmp = `-qmp\0unix:${qmpPath}`;
    return argv.includes(`${qmp},`) || argv.includes(`${qmp}\0`);
  } catch {
    return false;
  }
}

/** The process whose command line serves this QMP socket, looked for among all processes. */
async function pidServing(qmpPath: string): Promise<number | undefined> {
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (Number.isInteger(pid) && await qemuRuns(pid, qmpPath)) return pid;
  }
  return undefined;
}

/** Whether a name is taken: a link that names nothing takes it too. */
function exists(path: string): Promise<boolean> {
  return pathExists(path, { followLinks: false });
}
