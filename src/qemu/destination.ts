/**
 * The receiving end of a device-state migration: a destination QEMU that
 * waits (`-S -incoming defer`) for a guest's device state, wherever it
 * runs. Here it is a {@linkcode QemuGuest} of this process
 * ({@linkcode localDestination}); behind a target agent the same steps
 * travel over the agent's connection (see src/target/). Gang migration's
 * switch-over speaks only this interface, so it does not care which.
 *
 * @module
 */
import type { GuestStatus, QemuGuest } from "./guest.ts";
import type { Heartbeat } from "./heartbeat.ts";
import type { DiskTarget } from "./block_mirror.ts";
import {
  checkDestination,
  defaultUri,
  exitNote,
  removeUnixSocket,
  setCapabilities,
} from "./_migration_steps.ts";
import { errorMessage } from "../_errors.ts";
import { lendCpuShare } from "../cpu_share.ts";

/** What a destination is doing now. */
export interface DestinationState {
  /** False once its QEMU has exited. */
  alive: boolean;
  /** QEMU's run state (`inmigrate`, `paused`, `running`...), or `exited`. */
  status: string;
  /** True when its vCPUs run. */
  running: boolean;
  /** The guest's last heartbeat on its serial console, when it prints them. */
  heartbeat?: Heartbeat;
  /**
   * In `runWhenLoaded`'s answer: ms from `cont` returning (the vCPUs run)
   * to this state being read, which the downtime does not include.
   */
  sinceRunMs?: number;
}

/** A destination QEMU waiting for, loading, or running a guest moved to it. */
export interface Destination {
  /** The guest's name. */
  readonly name: string;
  /** Asks QEMU what it is doing. */
  state(): Promise<DestinationState>;
  /**
   * Turns on the capabilities of a device-state migration (`x-ignore-shared`)
   * and makes the destination listen.
   *
   * @returns The address the source QEMU migrates to (`migrate`'s `uri`)
   */
  listen(): Promise<string>;
  /**
   * Waits until the destination has loaded the device state and sits
   * paused, then runs it (`cont`): one step, so that a destination behind
   * a target agent costs one round trip in the downtime. With `paused` it
   * takes the guest over without `cont`.
   *
   * @returns What it does after `cont` (or after the load, with `paused`)
   * @throws NotLoadedError when it never loaded, so it was never started
   * (its source may run again); any other error leaves unknown whether it runs
   */
  runWhenLoaded(timeoutMs: number, options?: RunWhenLoadedOptions): Promise<DestinationState>;
  /** Why its QEMU died, with the end of its log (" (QEMU of ... exited: ...)"); "" while it lives. */
  exitNote(): Promise<string>;
  /** Removes what {@linkcode listen} left (a socket file, a relay), after the migration either way. */
  unlisten(): Promise<void>;
  /**
   * The disks the source copies into this destination (no shared storage),
   * each reachable over NBD on the source's host; none or absent when the
   * disks are shared.
   */
  readonly diskTargets?: readonly DiskTarget[];
  /**
   * Ends the NBD exports of its copied disks, once the source's mirrors
   * have ended: the guest's device is then the disks' only writer. Called
   * before the device state moves, so before `cont`.
   */
  endDiskTargets?(): Promise<void>;
}

/** Options of {@linkcode Destination.runWhenLoaded}. */
export interface RunWhenLoadedOptions {
  /** Runs between the load and `cont` (the agent marks the destination there). */
  beforeRun?: () => Promise<void>;
  /**
   * Leave its vCPUs paused, no `cont`: the guest was paused at its source
   * before the migration began, and moves as it was (as libvirt moves a
   * paused domain).
   */
  paused?: boolean;
}

/** A destination that never loaded its device state, so it was never started. */
export class NotLoadedError extends Error {
  /** An error saying why the destination did not load. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotLoadedError";
  }
}

/** Options of {@linkcode localDestination}. */
export interface LocalDestinationOptions {
  /** Where the source sends its device state. Default: a unix socket in the destination's run directory. */
  uri?: string;
  /** Where the destination listens. Default: `uri`. */
  incomingUri?: string;
}

/** The capabilities both ends of a device-state migration need: QEMU skips the shared RAM. */
export const DEVICE_STATE_CAPABILITIES = {
  "x-ignore-shared": true,
  events: true,
  multifd: false,
} as const;

/**
 * A destination QEMU of this process, reached over its own QMP socket.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP, the migration socket).
 *
 * @example
 * ```ts
 * import { localDestination } from "./destination.ts";
 * import { QemuGuest } from "./guest.ts";
 *
 * declare const source: QemuGuest;
 * const guest = await QemuGuest.startDestination(source.machine, { name: "vm1" });
 * const destination = localDestination(guest);
 * const uri = await destination.listen(); // then `migrate` the source to uri
 * ```
 */
export function localDestination(
  guest: QemuGuest,
  options: LocalDestinationOptions = {},
): Destination {
  const uri = options.uri ?? defaultUri(guest);
  const incomingUri = options.incomingUri ?? uri;
  // From listen() to `cont` this QEMU only waits for its guest, then loads it while the guest is
  // paused at its source: its work is the guest's downtime (cpu_share.ts).
  let giveBackCpu = () => {};
  return {
    name: guest.name,
    state: () => localState(guest),
    async listen() {
      // late-block-activate: the destination takes its disks (and their
      // locks) at `cont`, not when the device state has loaded, so a source
      // resumed after a failed switch-over can take its shared disks back.
      giveBackCpu = lendCpuShare(guest.pid);
      await setCapabilities(guest, { ...DEVICE_STATE_CAPABILITIES, "late-block-activate": true });
      await guest.qmp.execute("migrate-incoming", { uri: incomingUri });
      return uri;
    },
    async runWhenLoaded(timeoutMs, { beforeRun, paused = false } = {}) {
      try {
        await checkDestination(guest, timeoutMs);
      } catch (error) {
        throw new NotLoadedError(errorMessage(error), { cause: error });
      }
      await beforeRun?.();
      if (!paused) await guest.resume();
      const ranAt = performance.now();
      giveBackCpu(); // its guest runs: no more than any other guest's weight
      const state = await localState(guest);
      return { ...state, sinceRunMs: performance.now() - ranAt };
    },
    exitNote: () => exitNote(guest),
    unlisten: () => {
      giveBackCpu();
      return removeUnixSocket(incomingUri);
    },
  };
}

/** A local guest's state; an exited QEMU or a dead QMP connection reads as exited. */
export async function localState(guest: QemuGuest): Promise<DestinationState> {
  const heartbeat = await guest.heartbeat().catch(() => undefined);
  if (!guest.alive) return { alive: false, status: "exited", running: false, heartbeat };
  try {
    const status: GuestStatus = await guest.status();
    return { alive: true, ...status, heartbeat };
  } catch {
    return { alive: guest.alive, status: guest.alive ? "unknown" : "exited", running: false };
  }
}
