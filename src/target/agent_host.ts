/**
 * What a target agent holds across its connections: its options, its
 * files, its connections, the one gang under way, and the guests that
 * moved to this host and run here (kept_guests.ts).
 *
 * @module
 */
import { join } from "node:path";
import type { ReceiverOptions } from "../transfer/receiver.ts";
import { pathExists } from "../_path_exists.ts";
import { AgentGang, type GangMachine } from "./agent_gang.ts";
import { KeptGuests } from "./kept_guests.ts";
import { claimCpuShare, releaseCpuShare } from "../cpu_share.ts";
import { FileStore } from "./agent_files.ts";
import { addressGroup } from "../_address_group.ts";

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
   * weight QEMU's incoming multifd migrations would have (src/cpu_share.ts;
   * root only), and its guests run at the usual one.
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

/**
 * Default of `maxControlPerAddress`: a source holds one control connection
 * (a tool that lists the kept guests meanwhile, a second), two sources on
 * one host four; a peer that opens more without end would hold as many
 * buffers and sessions.
 */
export const MAX_CONTROL_PER_ADDRESS = 8;

/** The agent's state. */
export class AgentHost {
  /** Its options. */
  readonly options: AgentOptions;
  /** Its kernels, initrds and base images. */
  readonly files: FileStore;
  /** Where copied disks' overlays go. */
  readonly diskDir: string;
  /** The guests that moved here and run. */
  readonly kept: KeptGuests;
  #gang: AgentGang | undefined;
  #starting = false;
  #stopping = false;
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
    this.kept = new KeptGuests({
      dir: options.dir,
      runDir: options.runDir,
      diskDir: this.diskDir,
      log: (event) => this.log(event),
    });
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
   * returned handle is disposed of. Addresses one host can hold at once
   * count as one (every loopback address, an IPv6 /64: `addressGroup`).
   *
   * @throws Error when that address's group holds as many as it may
   */
  openControl(address: string): Disposable {
    const max = this.options.maxControlPerAddress ?? MAX_CONTROL_PER_ADDRESS;
    const group = addressGroup(address);
    const open = this.#controls.get(group) ?? 0;
    if (open >= max) {
      const who = group === address ? address : `${address} (counted as ${group})`;
      throw new Error(
        `Refused: ${who} has ${open} control connections open, the most one address may`,
      );
    }
    this.#controls.set(group, open + 1);
    let closed = false;
    return {
      [Symbol.dispose]: () => {
        if (closed) return;
        closed = true;
        const left = this.#controls.get(group)! - 1;
        if (left === 0) this.#controls.delete(group);
        else this.#controls.set(group, left);
      },
    };
  }

  /** True once the agent stops: its connections end because it closed them. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Closes every open connection: the agent stops. */
  closeConnections(): void {
    this.#stopping = true;
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
      if (this.kept.has(name)) {
        // Said to the source too, where "here" would read as the source's host.
        throw new Error(
          `Cannot take guest "${name}": a guest of that name already runs on the target ` +
            `(moved there before)`,
        );
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
    // Receiving in a thread or two what QEMU would in three per guest: their weight, for as long
    // as the gang lasts (endGang). Claimed first: the destinations start at the usual
    // priority, and each borrows this one from its listen() to its `cont` (localDestination).
    if (!this.options.keepPriority) claimCpuShare(machines.length);
    try {
      this.#gang = await AgentGang.start(machines, {
        dir: this.options.dir,
        runDir: join(this.options.runDir, "guests"),
        diskDir: this.diskDir,
      });
      this.log({ event: "prepared", guests: this.#gang.names });
      return this.#gang;
    } catch (error) {
      releaseCpuShare();
      throw error;
    } finally {
      this.#starting = false;
    }
  }

  /** The gang is over (released, discarded or abandoned): the agent is free for the next. */
  endGang(): void {
    this.#gang?.closeConnections();
    this.#gang = undefined;
    releaseCpuShare();
  }

  /** Ends the gang under way, if any (the agent stops); kept guests run on. */
  async close(): Promise<void> {
    this.kept.close();
    await this.#gang?.end(true);
    this.#gang = undefined;
  }
}

/** Whether a name is taken: a link that names nothing takes it too. */
function exists(path: string): Promise<boolean> {
  return pathExists(path, { followLinks: false });
}
