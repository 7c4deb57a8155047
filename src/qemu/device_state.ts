/**
 * The device-state-only migration gang migration relies on: gangway moves
 * the RAM, QEMU (with `x-ignore-shared`) moves only the device state from
 * a source {@linkcode QemuGuest} to a {@linkcode Destination}, here or
 * behind a target agent.
 *
 * @module
 */
import type { QemuGuest } from "./guest.ts";
import {
  type Destination,
  type DestinationState,
  DEVICE_STATE_CAPABILITIES,
  NotLoadedError,
} from "./destination.ts";
import { finalInfo, recoverSource, setCapabilities, waitForStatus } from "./_migration_steps.ts";
import { errorMessage } from "../_errors.ts";
import { lendCpuShare } from "../cpu_share.ts";
import { type DeviceStateMigrationResult, downtimeParts, ranAt } from "./downtime_parts.ts";

/** Options of {@linkcode DeviceStateMigration.start}. */
export interface DeviceStateMigrationOptions {
  /**
   * Let QEMU pause the running source just before the switch-over
   * (`pause-before-switchover`) so the caller can copy the final RAM then.
   * Without it the source must already be paused (and its RAM copied).
   */
  pauseBeforeSwitchover?: boolean;
  /** Resume the source when the migration fails. Default: when it was running or paused by `stop`. */
  resumeSourceOnFailure?: boolean;
  /**
   * The guest was paused before its migration began: its destination takes
   * it over paused (no `cont`, see {@linkcode Destination.runWhenLoaded}).
   * Default false.
   */
  movesPaused?: boolean;
  /** Time allowed for each wait. Default 30000 ms. */
  timeoutMs?: number;
  /**
   * The caller ran {@linkcode DeviceStateMigration.prepareSource} before it
   * paused the source, and paused it (its `pause()` returned): `start()`
   * then only sends `migrate`, one QMP round trip in the downtime instead
   * of three.
   */
  sourcePrepared?: boolean;
}

/** Options of {@linkcode moveDeviceState}. */
export interface MoveDeviceStateOptions extends DeviceStateMigrationOptions {
  /**
   * Runs while the source is paused at `pre-switchover`, before any
   * device state moves: copy the final RAM here. Implies
   * `pauseBeforeSwitchover`.
   */
  whilePaused?: () => Promise<void>;
}

const DEFAULT_WAIT_MS = 30_000;

/** A source's capabilities for a device-state migration, at `start()` or ahead of it. */
async function setSourceCapabilities(
  source: QemuGuest,
  pauseBeforeSwitchover: boolean,
): Promise<void> {
  await setCapabilities(source, {
    ...DEVICE_STATE_CAPABILITIES,
    "pause-before-switchover": pauseBeforeSwitchover,
  });
}

/**
 * A device-state-only migration in steps, so the caller orders it around
 * its own RAM copy: {@linkcode start} → {@linkcode waitForSourcePaused}
 * (the source is paused, no device state has moved) → copy the final RAM →
 * {@linkcode finish} (switch-over, check the destination, `cont` it). Any
 * failing step leaves the source resumed (see
 * {@linkcode DeviceStateMigrationOptions.resumeSourceOnFailure}) and throws.
 *
 * The destination comes from `QemuGuest.startDestination(source.machine,
 * ...)` (wrapped by `localDestination()`) or from a target agent;
 * its RAM file must hold a byte copy of the source's RAM, written while
 * the source is paused, before {@linkcode finish}.
 *
 * Requires `--allow-net`, `--allow-read` and `--allow-write` (QMP and unix migration sockets).
 *
 * @example
 * ```ts
 * import { DeviceStateMigration } from "./device_state.ts";
 * import type { Destination } from "./destination.ts";
 * import type { QemuGuest } from "./guest.ts";
 *
 * declare const source: QemuGuest, destination: Destination;
 * // Gangway's final round, or any copy of the RAM file's pages.
 * declare function copyFinalRam(): Promise<void>;
 *
 * const migration = await DeviceStateMigration.start(source, destination, {
 *   pauseBeforeSwitchover: true,
 * });
 * await migration.waitForSourcePaused();
 * await copyFinalRam(); // the caller's
 * const { downtimeMs } = await migration.finish();
 * ```
 */
export class DeviceStateMigration {
  /** The source guest. */
  readonly source: QemuGuest;
  /** The destination. */
  readonly destination: Destination;
  #pauseBeforeSwitchover: boolean;
  #resumeOnFailure: boolean;
  #movesPaused: boolean;
  #timeoutMs: number;
  #startedAt: number;
  /** When `migrate` was sent. */
  #migratingAt = 0;
  #pausedAt: number | undefined;
  #destinationStarted = false;
  #failed: Error | undefined;
  #finishing: Promise<DeviceStateMigrationResult> | undefined;
  /** Gives the source its own CPU priority back (lent while paused: cpu_share.ts). */
  #giveBackCpu = () => {};

  private constructor(
    source: QemuGuest,
    destination: Destination,
    options: Required<DeviceStateMigrationOptions>,
    startedAt: number,
  ) {
    this.source = source;
    this.destination = destination;
    this.#pauseBeforeSwitchover = options.pauseBeforeSwitchover;
    this.#resumeOnFailure = options.resumeSourceOnFailure;
    this.#movesPaused = options.movesPaused;
    this.#timeoutMs = options.timeoutMs;
    this.#startedAt = startedAt;
  }

  /**
   * Enables `x-ignore-shared` on both ends, makes the destination listen and
   * the source connect. With `pauseBeforeSwitchover` the source keeps
   * running until QEMU pauses it at `pre-switchover`.
   *
   * @throws Error when the source runs without `pauseBeforeSwitchover` (its
   * RAM would never reach the destination) or a step fails
   */
  static async start(
    source: QemuGuest,
    destination: Destination,
    options: DeviceStateMigrationOptions = {},
  ): Promise<DeviceStateMigration> {
    const startedAt = performance.now();
    const pauseBeforeSwitchover = options.pauseBeforeSwitchover ?? false;
    const prepared = options.sourcePrepared === true && !pauseBeforeSwitchover;
    const { status } = prepared ? { status: "paused" } : await source.status();
    if (status === "running" && !pauseBeforeSwitchover) {
      throw new Error(
        `Cannot migrate the device state of guest "${source.name}": it is running ` +
          "(pause it and copy its RAM first, or use pauseBeforeSwitchover)",
      );
    }
    const migration = new DeviceStateMigration(source, destination, {
      pauseBeforeSwitchover,
      resumeSourceOnFailure: options.resumeSourceOnFailure ??
        (status === "running" || status === "paused"),
      movesPaused: options.movesPaused ?? false,
      timeoutMs: options.timeoutMs ?? DEFAULT_WAIT_MS,
      sourcePrepared: prepared,
    }, startedAt);
    await migration.#step(async () => {
      // Independent steps, in flight together: with the source paused, each is downtime.
      const [uri] = await Promise.all([
        destination.listen(),
        prepared ? undefined : setSourceCapabilities(source, pauseBeforeSwitchover),
      ]);
      await source.qmp.execute("migrate", { uri });
      migration.#migratingAt = performance.now();
    });
    return migration;
  }

  /**
   * Sets the source's capabilities of a device-state migration while it
   * still runs (they change nothing until `migrate`), so that a
   * {@linkcode start} with `sourcePrepared` after the pause spends no round
   * trip on them. A QEMU migration of the guest later sets its own.
   */
  static async prepareSource(source: QemuGuest): Promise<void> {
    await setSourceCapabilities(source, false);
  }

  /**
   * Waits until the source is paused before its switch-over: at
   * `pre-switchover` with `pauseBeforeSwitchover`, at once otherwise. No
   * device state has moved yet; the source's RAM no longer changes.
   */
  async waitForSourcePaused(): Promise<void> {
    if (this.#pausedAt !== undefined) return;
    await this.#step(async () => {
      if (this.#pauseBeforeSwitchover) {
        await waitForStatus(this.source, ["pre-switchover"], this.#timeoutMs);
      }
      // The guest stopped at its last STOP event: QEMU's at pre-switchover,
      // or the caller's `stop` before start().
      const stop = this.source.lastStopAt;
      this.#pausedAt = this.#pauseBeforeSwitchover
        ? (stop !== undefined && stop >= this.#startedAt ? stop : performance.now())
        : (stop ?? this.#startedAt);
      // Paused, its guest's downtime is now this QEMU's work (saving the device state): it
      // borrows the caller's weight (cpu_share.ts) until it is done or resumed.
      this.#giveBackCpu = lendCpuShare(this.source.pid);
    });
  }

  /**
   * Lets the device state move, checks the destination loaded it and is
   * paused, then runs it (`cont`).
   *
   * @param runAfter the destination runs only once this resolves (the
   * caller's verification of the RAM, which may go on while the device
   * state moves); if it rejects, the migration fails as any step does
   * @throws Error when the migration fails; the source is then resumed
   */
  finish(runAfter?: Promise<void>): Promise<DeviceStateMigrationResult> {
    this.#finishing ??= this.#finish(runAfter);
    return this.#finishing;
  }

  async #finish(runAfter: Promise<void> | undefined): Promise<DeviceStateMigrationResult> {
    await this.waitForSourcePaused();
    return await this.#step(async () => {
      const switchStart = performance.now();
      if (this.#pauseBeforeSwitchover) {
        await this.source.qmp.execute("migrate-continue", { state: "pre-switchover" });
      }
      await waitForStatus(this.source, ["completed"], this.#timeoutMs);
      const completedAt = performance.now();
      await runAfter;
      const verifiedAt = performance.now();
      let state: DestinationState;
      try {
        state = await this.destination.runWhenLoaded(this.#timeoutMs, {
          paused: this.#movesPaused,
        });
      } catch (error) {
        // Unless it surely never started, the source must not run again: two would run.
        if (!(error instanceof NotLoadedError)) this.#destinationStarted = true;
        throw error;
      }
      this.#destinationStarted = true;
      if (state.running === this.#movesPaused) {
        const after = this.#movesPaused ? "loading, kept paused" : "cont";
        throw new Error(`destination "${this.destination.name}" is ${state.status} after ${after}`);
      }
      const runningAt = ranAt(verifiedAt, performance.now(), state.sinceRunMs);
      this.#giveBackCpu();
      const info = await finalInfo(this.source);
      await this.destination.unlisten();
      return {
        source: this.source.name,
        destination: this.destination.name,
        downtimeMs: runningAt - this.#pausedAt!,
        switchoverMs: runningAt - switchStart,
        totalMs: runningAt - this.#startedAt,
        transferredBytes: info.ram?.transferred ?? 0,
        qemuDowntimeMs: info.downtime,
        runningAt,
        downtimeParts: downtimeParts(this.#pausedAt!, {
          started: this.#startedAt,
          // With pause-before-switchover the device state moves from migrate-continue on.
          migrating: this.#pauseBeforeSwitchover ? switchStart : this.#migratingAt,
          completed: completedAt,
          verified: verifiedAt,
          running: runningAt,
        }),
      };
    });
  }

  /**
   * Gives up: cancels the source's migration and resumes the source (when
   * it should run). The destination is left for the caller to close.
   *
   * @returns what became of the source
   */
  async abort(): Promise<string> {
    this.#giveBackCpu(); // before it may run again
    const note = await recoverSource(
      this.source,
      this.#resumeOnFailure && !this.#destinationStarted,
    );
    await this.destination.unlisten().catch(() => {});
    return note;
  }

  /** Runs a step; on failure recovers the source once and throws a full error. */
  async #step<T>(body: () => Promise<T>): Promise<T> {
    if (this.#failed) throw this.#failed;
    try {
      return await body();
    } catch (error) {
      this.#failed = await this.#failure(error);
      throw this.#failed;
    }
  }

  /**
   * Runs the caller's work while the source is paused (see
   * {@linkcode waitForSourcePaused}); when it throws, gives up as any
   * failing step does.
   */
  async whilePaused(work: () => Promise<void>): Promise<void> {
    await this.waitForSourcePaused();
    await this.#step(async () => {
      try {
        await work();
      } catch (error) {
        throw new Error(`the work done while paused failed: ${errorMessage(error)}`, {
          cause: error,
        });
      }
    });
  }

  async #failure(error: unknown): Promise<Error> {
    const died = await this.destination.exitNote().catch(() => "");
    const note = await this.abort();
    return new Error(
      `Cannot migrate the device state of guest "${this.source.name}" to ` +
        `"${this.destination.name}": ${errorMessage(error)}${died}; ${note}`,
      { cause: error },
    );
  }
}

/**
 * Moves a guest's device state to a destination whose RAM file the caller
 * fills. Either pause the source and copy its RAM before calling this, or
 * pass `whilePaused`: QEMU then pauses the source at `pre-switchover`,
 * `whilePaused` copies the final RAM, and only then does device state move.
 * The destination is checked before it is started; on failure the source
 * is resumed and the error says so.
 *
 * Requires `--allow-net`, `--allow-read` and `--allow-write` (QMP and unix migration sockets).
 *
 * @example
 * ```ts
 * import { moveDeviceState } from "./device_state.ts";
 * import { localDestination } from "./destination.ts";
 * import { QemuGuest } from "./guest.ts";
 *
 * declare const source: QemuGuest;
 * // Gangway's transfer, or any copy of the RAM file's pages.
 * declare function copyRam(from: string, to: string): Promise<void>;
 *
 * const guest = await QemuGuest.startDestination(source.machine, { name: "vm1-b" });
 * const result = await moveDeviceState(source, localDestination(guest), {
 *   whilePaused: () => copyRam(source.ramPath, guest.ramPath),
 * });
 * console.log(`downtime ${result.downtimeMs} ms`);
 * ```
 */
export async function moveDeviceState(
  source: QemuGuest,
  destination: Destination,
  options: MoveDeviceStateOptions = {},
): Promise<DeviceStateMigrationResult> {
  const { whilePaused } = options;
  const migration = await DeviceStateMigration.start(source, destination, {
    ...options,
    pauseBeforeSwitchover: whilePaused !== undefined || options.pauseBeforeSwitchover,
  });
  if (whilePaused) await migration.whilePaused(whilePaused);
  return await migration.finish();
}
