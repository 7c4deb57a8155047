/**
 * One gang at a target agent: the destination QEMUs the agent started for
 * it from checked machine descriptions, their RAM files under the agent's
 * directory and their run directories (QMP socket, logs, migration
 * socket) under its run directory, and the overlays of its copied disks
 * (`DISKS/NAME/diskN.qcow2`, over base images found by hash). Everything it
 * made is removed when a destination is discarded; destinations that took
 * over their guest are kept running when the gang ends.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { join } from "node:path";
import { QemuGuest } from "../qemu/guest.ts";
import { type Destination, localDestination } from "../qemu/destination.ts";
import type { QemuMachine } from "../qemu/qemu_args.ts";
import { createOverlay, endDiskExports, exportDisks } from "../qemu/block_mirror.ts";
import { errorMessage } from "../_errors.ts";

/** The file in a destination's run directory that says it was started: it is a guest now. */
export const RESUMED_MARK = "resumed";

/** Where a gang's files go at the target. */
export interface AgentGangPlaces {
  /** Directory of the destinations' RAM files (`DIR/NAME`, where the receiver writes). */
  dir: string;
  /** Directory of the destinations' run directories (`RUN/NAME/`). */
  runDir: string;
  /** Directory of the copied disks' overlays (`DISKS/NAME/`). */
  diskDir: string;
  /** Time QEMU gets to open its QMP socket. Default 10 s. */
  startTimeoutMs?: number;
}

/** A destination the agent starts: its machine, and which of its disks are copied. */
export interface GangMachine {
  /** The guest's name. */
  name: string;
  /** The machine; a copied disk's path is its overlay under the disk directory (made here). */
  machine: QemuMachine;
  /** Indices of the disks the source copies in (no shared storage). */
  copiedDisks: number[];
}

/** Where the agent puts the overlay of a guest's copied disk. */
export function copiedDiskPath(diskDir: string, guest: string, index: number): string {
  return join(diskDir, guest, `disk${index}.qcow2`);
}

/** A destination of the gang. */
export interface GangDestination {
  /** The QEMU. */
  guest: QemuGuest;
  /** Its switch-over steps. */
  destination: Destination;
  /** Its run directory, removed with it. */
  runDir: string;
  /** The unix socket it listens on for its device state, once asked to listen. */
  incomingPath: string;
  /** Indices of its copied disks, exported for the source's mirror until it ends. */
  copiedDisks: number[];
  /** Its NBD server's unix socket, while its copied disks are exported. */
  nbdPath?: string;
  /** The connection to that socket the agent carries for each disk (one at a time), closed before the exports end. */
  nbdConns: Map<number, { close(): void }>;
  /** While its exports end: what every caller of `endDiskCopies` waits for. */
  disksEnding?: Promise<void>;
  /** The directory of its copied disks' overlays, removed when it is discarded. */
  diskDir?: string;
  /** True once it was started (`cont`): it is the guest now, and is never discarded for the source's sake. */
  resumed: boolean;
  /** True while a device-state connection of its is open: one at a time. */
  deviceStateOpen?: boolean;
}

/** The destinations of one gang. */
export class AgentGang {
  /** The secret the gang's RAM and device-state connections present. */
  readonly key: string;
  readonly #destinations = new Map<string, GangDestination>();
  /** Its RAM and device-state connections, closed when the gang ends. */
  readonly #connections = new Set<{ close(): void }>();
  /** True while its RAM connection is open. */
  #ramOpen = false;
  /** True once its connections were closed. */
  #over = false;

  private constructor(key: string) {
    this.key = key;
  }

  /**
   * Starts a destination for every machine, waiting for its guest.
   *
   * Requires `--allow-run` (QEMU), `--allow-read`, `--allow-write`, `--allow-net` (QMP).
   *
   * @throws Error naming every destination that could not start; none then runs
   */
  static async start(
    machines: readonly GangMachine[],
    places: AgentGangPlaces,
  ): Promise<AgentGang> {
    const gang = new AgentGang(randomKey());
    const started = await Promise.allSettled(machines.map(async (m) => {
      const { name, machine, copiedDisks } = m;
      const runDir = join(places.runDir, name);
      const diskDir = copiedDisks.length > 0 ? join(places.diskDir, name) : undefined;
      await Deno.mkdir(runDir, { recursive: true, mode: 0o700 });
      try {
        if (diskDir) await makeOverlays(machine, copiedDisks, diskDir);
        const ramPath = join(places.dir, name);
        const guest = await QemuGuest.startDestination(machine, {
          name,
          ramPath,
          runDir,
          startTimeoutMs: places.startTimeoutMs,
        });
        const incomingPath = join(runDir, `${name}.migrate`);
        const destination = localDestination(guest, { uri: `unix:${incomingPath}` });
        const found: GangDestination = {
          guest,
          destination,
          runDir,
          incomingPath,
          resumed: false,
          copiedDisks,
          diskDir,
          nbdConns: new Map(),
        };
        gang.#destinations.set(name, found);
        // QEMU makes it 0644: the directory (0700) keeps others out, but a copy or a moved file
        // would keep the mode. QEMU holds it open already: the mode is for others only.
        await Deno.chmod(ramPath, 0o600);
        // Listening from the start: the source's device-state path is ready before any pause.
        await destination.listen();
        if (diskDir) {
          found.nbdPath = join(runDir, `${name}.nbd`);
          await exportDisks(guest, found.nbdPath, copiedDisks);
        }
      } catch (error) {
        // The overlay first: a run directory left alone by a crash here keeps the name taken.
        if (diskDir) await Deno.remove(diskDir, { recursive: true }).catch(() => {});
        await Deno.remove(runDir, { recursive: true }).catch(() => {});
        throw error;
      }
    }));
    const failed = started.flatMap((s) => s.status === "rejected" ? [s.reason] : []);
    if (failed.length > 0) {
      await gang.discard();
      throw new Error(failed.map((e) => errorMessage(e)).join("; "));
    }
    return gang;
  }

  /**
   * Remembers a connection of this gang, to be closed when the gang ends,
   * until the returned handle is disposed of (the connection ended). Only
   * a connection whose checks passed: a refused one must not stay.
   *
   * @throws Error when the gang is over (its connections were closed)
   */
  adopt(connection: { close(): void }): Disposable {
    if (this.#over) throw new Error("Refused: the gang is over");
    this.#connections.add(connection);
    return { [Symbol.dispose]: () => this.#connections.delete(connection) };
  }

  /** @internal How many connections the gang holds now (for tests). */
  get adoptedCount(): number {
    return this.#connections.size;
  }

  /**
   * Marks the gang's RAM connection open until the returned handle is
   * disposed of: a second one would open every RAM file again, and on
   * failing discard what the first one wrote.
   *
   * @throws Error when one is open already
   */
  openRam(): Disposable {
    if (this.#ramOpen) throw new Error("Refused: the gang's RAM comes on another connection");
    this.#ramOpen = true;
    return { [Symbol.dispose]: () => (this.#ramOpen = false) };
  }

  /**
   * Marks a destination's device-state connection open until the returned
   * handle is disposed of: its QEMU takes one migration stream, and each
   * connection holds a socket to it.
   *
   * @throws Error when one is open already
   */
  openDeviceState(found: GangDestination): Disposable {
    if (found.deviceStateOpen) {
      throw new Error(`Refused: guest "${found.guest.name}" has a device-state connection open`);
    }
    found.deviceStateOpen = true;
    return { [Symbol.dispose]: () => (found.deviceStateOpen = false) };
  }

  /** Closes the gang's connections: it is over, and adopts no more. */
  closeConnections(): void {
    this.#over = true;
    for (const connection of this.#connections) connection.close();
    this.#connections.clear();
  }

  /** The names of its destinations. */
  get names(): string[] {
    return [...this.#destinations.keys()];
  }

  /** Its guests' RAM sizes in bytes, by name. */
  ramBytes(name: string): number | undefined {
    const found = this.#destinations.get(name);
    return found ? found.guest.machine.memoryMiB * 2 ** 20 : undefined;
  }

  /**
   * A destination of this gang.
   *
   * @throws Error when the gang has none of that name
   */
  get(name: unknown): GangDestination {
    const found = typeof name === "string" ? this.#destinations.get(name) : undefined;
    if (!found) throw new Error(`This gang has no guest ${JSON.stringify(name)}`);
    return found;
  }

  /**
   * Ends the NBD exports of a destination's copied disks: the source's
   * mirrors have ended, and its guest's device must be their only writer.
   */
  endDiskCopies(name: unknown): Promise<void> {
    const found = this.get(name);
    // One ending at a time, and every caller waits for it: `run-when-loaded` asked meanwhile
    // must not run the guest while its disk is still exported.
    found.disksEnding ??= endDisks(found).finally(() => (found.disksEnding = undefined));
    return found.disksEnding;
  }

  /**
   * Stops destinations (all by default) and removes their RAM files, run
   * directories and copied disks.
   *
   * @returns How many destinations the gang still has
   */
  async discard(names: readonly string[] = this.names): Promise<number> {
    await Promise.all(names.map(async (name) => {
      const found = this.#destinations.get(name);
      if (!found) return;
      this.#destinations.delete(name);
      await found.guest.close({ removeRam: true, timeoutMs: 2_000 }).catch(() => {});
      // The overlay first: an agent killed between the two leaves the run directory, which
      // keeps the name taken, not an overlay no one can tell from a moved guest's disk.
      if (found.diskDir) await Deno.remove(found.diskDir, { recursive: true }).catch(() => {});
      await Deno.remove(found.runDir, { recursive: true }).catch(() => {});
    }));
    return this.#destinations.size;
  }

  /**
   * Ends the gang: destinations whose guest runs here are kept (returned),
   * the others discarded.
   *
   * @param keepResumedOnly keep only destinations started with `cont`
   * (the source side is gone: a destination not yet started has a source
   * that still runs), rather than every one that runs
   */
  async end(keepResumedOnly = false): Promise<GangDestination[]> {
    const kept: GangDestination[] = [];
    const dropped: string[] = [];
    for (const [name, found] of this.#destinations) {
      const running = found.resumed ||
        (!keepResumedOnly && (await found.destination.state().catch(() => undefined))?.running);
      if (running) kept.push(found);
      else dropped.push(name);
    }
    await this.discard(dropped);
    this.#destinations.clear();
    return kept;
  }
}

/** Ends a destination's disk exports, after closing the connections the agent carries to them. */
async function endDisks(found: GangDestination): Promise<void> {
  const nbdPath = found.nbdPath;
  if (!nbdPath) return;
  // Refused from now on: a connection made while the exports end would outlive them.
  found.nbdPath = undefined;
  // A connection left open (a source that never used it) would hold up QEMU's `nbd-server-stop`.
  for (const conn of found.nbdConns.values()) {
    closeQuietly(conn);
  }
  found.nbdConns.clear();
  try {
    await endDiskExports(found.guest, found.copiedDisks);
  } catch (error) {
    found.nbdPath = nbdPath; // still exported: the next try ends them
    throw error;
  }
}

/** Makes a fresh overlay for each copied disk, over its base (found by hash), in `diskDir`. */
async function makeOverlays(
  machine: QemuMachine,
  copiedDisks: readonly number[],
  diskDir: string,
): Promise<void> {
  await Deno.mkdir(diskDir, { recursive: true, mode: 0o700 });
  for (const index of copiedDisks) {
    const disk = machine.disks?.[index];
    if (!disk?.base || !disk.path.startsWith(`${diskDir}/`)) {
      throw new Error(`Cannot make the overlay of disk ${index}: it is not a copied disk here`);
    }
    await createOverlay(disk.path, disk.base);
  }
}

/** 32 random bytes as hex: a session key nobody can guess. */
function randomKey(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}
