/**
 * QEMU's own migrations between two {@linkcode QemuGuest}s: the
 * device-state-only switch-over gang migration relies on (RAM is moved by
 * gangway, QEMU skips it with `x-ignore-shared`), and QEMU's full live
 * migration, the baseline gang migration is compared against.
 *
 * @module
 */
import type { QemuGuest } from "./guest.ts";
import {
  checkDestination,
  defaultUri,
  exitNote,
  finalInfo,
  type MigrationInfo,
  recoverSource,
  removeUnixSocket,
  setCapabilities,
  setParameters,
  startBothEnds,
  waitForStatus,
} from "./_migration_steps.ts";

/** Options of {@linkcode DeviceStateMigration.start}. */
export interface DeviceStateMigrationOptions {
  /** Address the source sends to, e.g. `tcp:10.0.0.2:4444`. Default: a unix socket in the destination's run directory. */
  uri?: string;
  /** Address the destination listens on, e.g. `tcp:0.0.0.0:4444`. Default: `uri`. */
  incomingUri?: string;
  /**
   * Let QEMU pause the running source just before the switch-over
   * (`pause-before-switchover`) so the caller can copy the final RAM then.
   * Without it the source must already be paused (and its RAM copied).
   */
  pauseBeforeSwitchover?: boolean;
  /** Resume the source when the migration fails. Default: when it was running or paused by `stop`. */
  resumeSourceOnFailure?: boolean;
  /** Time allowed for each wait. Default 30000 ms. */
  timeoutMs?: number;
}

/** Options of {@linkcode migrateDeviceState}. */
export interface MigrateDeviceStateOptions extends DeviceStateMigrationOptions {
  /**
   * Runs while the source is paused at `pre-switchover`, before any
   * device state moves: copy the final RAM here. Implies
   * `pauseBeforeSwitchover`.
   */
  whilePaused?: () => Promise<void>;
}

/** What a device-state migration measured. */
export interface DeviceStateMigrationResult {
  /** Source guest name. */
  source: string;
  /** Destination guest name. */
  destination: string;
  /** From the source's vCPUs stopping to the destination's running: the guest's downtime. */
  downtimeMs: number;
  /** From the device state starting to move (migrate or migrate-continue) to the destination running. */
  switchoverMs: number;
  /** From {@linkcode DeviceStateMigration.start} to the destination running. */
  totalMs: number;
  /** Bytes QEMU sent (device state and RAM blocks that are not shared). */
  transferredBytes: number;
  /** The downtime QEMU reports on the source (its own view; includes the paused copy). */
  qemuDowntimeMs?: number;
}

/** Options of {@linkcode migrateWithQemu}. */
export interface QemuMigrationOptions {
  /** As in {@linkcode DeviceStateMigrationOptions.uri}. */
  uri?: string;
  /** As in {@linkcode DeviceStateMigrationOptions.incomingUri}. */
  incomingUri?: string;
  /** Send RAM over several connections (capability `multifd`). Default false. */
  multifd?: boolean;
  /** Connections when `multifd`. QEMU's default is 2. */
  multifdChannels?: number;
  /** Compression of multifd pages; `zlib` and `zstd` need `multifd`. Default `none`. */
  compression?: "none" | "zlib" | "zstd";
  /** Bandwidth cap in bytes per second. QEMU 7.2's default is 128 MiB/s. */
  maxBandwidth?: number;
  /** Largest downtime QEMU aims for, in ms. QEMU's default is 300. */
  downtimeLimitMs?: number;
  /** Time allowed for the whole migration. Default 300000 ms. */
  timeoutMs?: number;
}

/** What QEMU's own migration measured. */
export interface QemuMigrationResult {
  /** Source guest name. */
  source: string;
  /** Destination guest name. */
  destination: string;
  /** From `migrate` to the destination running, measured here. */
  totalMs: number;
  /** From the source's vCPUs stopping to the destination running, measured here. */
  downtimeMs: number;
  /** QEMU's total time on the source. */
  qemuTotalMs: number;
  /** QEMU's downtime on the source. */
  qemuDowntimeMs: number;
  /**
   * Bytes QEMU sent, all connections (`ram.transferred`). With multifd
   * compression QEMU 7.2 counts pages before compression: measured 72.8 MB
   * reported for 26.2 MB on the wire with zstd. Count on the wire then.
   */
  transferredBytes: number;
  /** Of those, bytes on multifd connections (`ram.multifd-bytes`; 0 without multifd). */
  multifdBytes: number;
  /** Pages sent whole (`ram.normal`). */
  normalPages: number;
  /** Pages sent as "all the same byte", i.e. zero pages (`ram.duplicate`). */
  zeroPages: number;
  /** Passes over dirty memory (`ram.dirty-sync-count`). */
  dirtySyncCount: number;
}

const DEFAULT_WAIT_MS = 30_000;

/**
 * A device-state-only migration in steps, so the caller orders it around
 * its own RAM copy: {@linkcode start} → {@linkcode waitForSourcePaused}
 * (the source is paused, no device state has moved) → copy the final RAM →
 * {@linkcode finish} (switch-over, check the destination, `cont` it). Any
 * failing step leaves the source resumed (see
 * {@linkcode DeviceStateMigrationOptions.resumeSourceOnFailure}) and throws.
 *
 * The destination comes from `QemuGuest.startDestination(source.machine,
 * ...)`; its RAM file must hold a byte copy of the source's RAM, written
 * while the source is paused, before {@linkcode finish}.
 *
 * Requires `--allow-net`, `--allow-read` and `--allow-write` (QMP and unix migration sockets).
 *
 * @example
 * ```ts
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
  /** The destination guest. */
  readonly destination: QemuGuest;
  /** The address the source sends to. */
  readonly uri: string;
  /** The address the destination listens on. */
  readonly incomingUri: string;
  #pauseBeforeSwitchover: boolean;
  #resumeOnFailure: boolean;
  #timeoutMs: number;
  #startedAt: number;
  #pausedAt: number | undefined;
  #destinationStarted = false;
  #failed: Error | undefined;
  #finishing: Promise<DeviceStateMigrationResult> | undefined;

  private constructor(
    source: QemuGuest,
    destination: QemuGuest,
    options: Required<DeviceStateMigrationOptions>,
    startedAt: number,
  ) {
    this.source = source;
    this.destination = destination;
    this.uri = options.uri;
    this.incomingUri = options.incomingUri;
    this.#pauseBeforeSwitchover = options.pauseBeforeSwitchover;
    this.#resumeOnFailure = options.resumeSourceOnFailure;
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
    destination: QemuGuest,
    options: DeviceStateMigrationOptions = {},
  ): Promise<DeviceStateMigration> {
    const startedAt = performance.now();
    const { status } = await source.status();
    const pauseBeforeSwitchover = options.pauseBeforeSwitchover ?? false;
    if (status === "running" && !pauseBeforeSwitchover) {
      throw new Error(
        `Cannot migrate the device state of guest "${source.name}": it is running ` +
          "(pause it and copy its RAM first, or use pauseBeforeSwitchover)",
      );
    }
    const uri = options.uri ?? defaultUri(destination);
    const migration = new DeviceStateMigration(source, destination, {
      uri,
      incomingUri: options.incomingUri ?? uri,
      pauseBeforeSwitchover,
      resumeSourceOnFailure: options.resumeSourceOnFailure ??
        (status === "running" || status === "paused"),
      timeoutMs: options.timeoutMs ?? DEFAULT_WAIT_MS,
    }, startedAt);
    await migration.#step(async () => {
      const capabilities = { "x-ignore-shared": true, events: true, multifd: false };
      // late-block-activate: the destination takes its disks (and their
      // locks) at `cont`, not when the device state has loaded, so a source
      // resumed after a failed switch-over can take its shared disks back.
      await setCapabilities(destination, { ...capabilities, "late-block-activate": true });
      await setCapabilities(source, {
        ...capabilities,
        "pause-before-switchover": pauseBeforeSwitchover,
      });
      await startBothEnds(source, destination, migration.uri, migration.incomingUri);
    });
    return migration;
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
    });
  }

  /**
   * Lets the device state move, checks the destination loaded it and is
   * paused, then runs it (`cont`).
   *
   * @throws Error when the migration fails; the source is then resumed
   */
  finish(): Promise<DeviceStateMigrationResult> {
    this.#finishing ??= this.#finish();
    return this.#finishing;
  }

  async #finish(): Promise<DeviceStateMigrationResult> {
    await this.waitForSourcePaused();
    return await this.#step(async () => {
      const switchStart = performance.now();
      if (this.#pauseBeforeSwitchover) {
        await this.source.qmp.execute("migrate-continue", { state: "pre-switchover" });
      }
      await waitForStatus(this.source, ["completed"], this.#timeoutMs);
      await checkDestination(this.destination, this.#timeoutMs);
      this.#destinationStarted = true;
      await this.destination.resume();
      const runningAt = performance.now();
      const info = await finalInfo(this.source);
      await removeUnixSocket(this.incomingUri);
      return {
        source: this.source.name,
        destination: this.destination.name,
        downtimeMs: runningAt - this.#pausedAt!,
        switchoverMs: runningAt - switchStart,
        totalMs: runningAt - this.#startedAt,
        transferredBytes: info.ram?.transferred ?? 0,
        qemuDowntimeMs: info.downtime,
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
    const note = await recoverSource(
      this.source,
      this.#resumeOnFailure && !this.#destinationStarted,
    );
    await removeUnixSocket(this.incomingUri);
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
        throw new Error(`the work done while paused failed: ${message(error)}`, { cause: error });
      }
    });
  }

  async #failure(error: unknown): Promise<Error> {
    const died = await exitNote(this.destination);
    const note = await this.abort();
    return new Error(
      `Cannot migrate the device state of guest "${this.source.name}" to ` +
        `"${this.destination.name}": ${message(error)}${died}; ${note}`,
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
 * const destination = await QemuGuest.startDestination(source.machine, { name: "vm1-b" });
 * const result = await migrateDeviceState(source, destination, {
 *   whilePaused: () => copyRam(source.ramPath, destination.ramPath),
 * });
 * console.log(`downtime ${result.downtimeMs} ms`);
 * ```
 */
export async function migrateDeviceState(
  source: QemuGuest,
  destination: QemuGuest,
  options: MigrateDeviceStateOptions = {},
): Promise<DeviceStateMigrationResult> {
  const { whilePaused } = options;
  const migration = await DeviceStateMigration.start(source, destination, {
    ...options,
    pauseBeforeSwitchover: whilePaused !== undefined || options.pauseBeforeSwitchover,
  });
  if (whilePaused) await migration.whilePaused(whilePaused);
  return await migration.finish();
}

/**
 * QEMU's own live migration, RAM included: the baseline. The destination
 * comes from `QemuGuest.startDestination(source.machine, ...)` (its RAM
 * file is not shared with QEMU's migration: `x-ignore-shared` is off).
 * Zero pages are sent as a few bytes each, as QEMU always does.
 *
 * Requires `--allow-net`, `--allow-read` and `--allow-write` (QMP and unix migration sockets).
 *
 * @throws Error when the migration fails or times out; the source is then
 * resumed
 *
 * @example
 * ```ts
 * const result = await migrateWithQemu(source, destination, { multifd: true, compression: "zstd" });
 * console.log(result.transferredBytes + result.multifdBytes, result.downtimeMs);
 * ```
 */
export async function migrateWithQemu(
  source: QemuGuest,
  destination: QemuGuest,
  options: QemuMigrationOptions = {},
): Promise<QemuMigrationResult> {
  const uri = options.uri ?? defaultUri(destination);
  const timeoutMs = options.timeoutMs ?? 300_000;
  const { status } = await source.status();
  let destinationStarted = false;
  try {
    const capabilities = {
      "x-ignore-shared": false,
      events: true,
      multifd: options.multifd ?? false,
    };
    await setCapabilities(destination, capabilities);
    await setCapabilities(source, { ...capabilities, "pause-before-switchover": false });
    const both = multifdParameters(options);
    await setParameters(destination, both);
    await setParameters(source, { ...both, ...sourceParameters(options) });
    const stopBefore = source.lastStopAt;
    const startedAt = performance.now();
    await startBothEnds(source, destination, uri, options.incomingUri ?? uri);
    await waitForStatus(source, ["completed"], timeoutMs);
    await checkDestination(destination, DEFAULT_WAIT_MS);
    destinationStarted = true;
    await destination.resume();
    const runningAt = performance.now();
    const info = await finalInfo(source);
    await removeUnixSocket(options.incomingUri ?? uri);
    const stoppedAt = source.lastStopAt !== stopBefore ? source.lastStopAt! : startedAt;
    return qemuResult(source, destination, info, runningAt - startedAt, runningAt - stoppedAt);
  } catch (error) {
    const died = await exitNote(destination);
    const resume = !destinationStarted && (status === "running" || status === "paused");
    const note = await recoverSource(source, resume);
    await removeUnixSocket(options.incomingUri ?? uri);
    throw new Error(
      `Cannot migrate guest "${source.name}" to "${destination.name}": ${
        message(error)
      }${died}; ${note}`,
      { cause: error },
    );
  }
}

function multifdParameters(options: QemuMigrationOptions): Record<string, unknown> {
  const compression = options.compression ?? "none";
  if (compression !== "none" && !options.multifd) {
    throw new Error(`compression "${compression}" needs multifd`);
  }
  if (!options.multifd) return {};
  return {
    "multifd-compression": compression,
    ...(options.multifdChannels ? { "multifd-channels": options.multifdChannels } : {}),
  };
}

function sourceParameters(options: QemuMigrationOptions): Record<string, unknown> {
  return {
    ...(options.maxBandwidth !== undefined ? { "max-bandwidth": options.maxBandwidth } : {}),
    ...(options.downtimeLimitMs !== undefined ? { "downtime-limit": options.downtimeLimitMs } : {}),
  };
}

function qemuResult(
  source: QemuGuest,
  destination: QemuGuest,
  info: MigrationInfo,
  totalMs: number,
  downtimeMs: number,
): QemuMigrationResult {
  return {
    source: source.name,
    destination: destination.name,
    totalMs,
    downtimeMs,
    qemuTotalMs: info["total-time"] ?? 0,
    qemuDowntimeMs: info.downtime ?? 0,
    transferredBytes: info.ram?.transferred ?? 0,
    multifdBytes: info.ram?.["multifd-bytes"] ?? 0,
    normalPages: info.ram?.normal ?? 0,
    zeroPages: info.ram?.duplicate ?? 0,
    dirtySyncCount: info.ram?.["dirty-sync-count"] ?? 0,
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
