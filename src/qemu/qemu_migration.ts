/**
 * QEMU's own full live migration between two {@linkcode QemuGuest}s, RAM
 * included: the baseline gang migration is compared against. (The
 * device-state-only migration gang migration uses is in device_state.ts.)
 *
 * @module
 */
import type { ThrottleSteps } from "../plan/convergence.ts";
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
import { errorMessage } from "../_errors.ts";

/** Time allowed for the destination to load what the source sent. */
const LOAD_WAIT_MS = 30_000;

/** Options of {@linkcode runQemuMigration}. */
export interface QemuMigrationOptions {
  /** Address the source sends to, e.g. `tcp:10.0.0.2:4444`. Default: a unix socket in the destination's run directory. */
  uri?: string;
  /** Address the destination listens on, e.g. `tcp:0.0.0.0:4444`. Default: `uri`. */
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
  /**
   * Throttle the guest's vCPUs while the migration does not converge
   * (capability `auto-converge`), by these shares of their time
   * (`max-cpu-throttle`, `cpu-throttle-initial`, `cpu-throttle-increment`;
   * QEMU's defaults for those not given). Default: no throttling.
   */
  throttle?: ThrottleSteps;
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
 * import { runQemuMigration } from "./qemu_migration.ts";
 * import type { QemuGuest } from "./guest.ts";
 *
 * declare const source: QemuGuest, destination: QemuGuest;
 * const result = await runQemuMigration(source, destination, { multifd: true, compression: "zstd" });
 * console.log(result.transferredBytes + result.multifdBytes, result.downtimeMs);
 * ```
 */
export async function runQemuMigration(
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
    await setCapabilities(source, {
      ...capabilities,
      "pause-before-switchover": false,
      "auto-converge": options.throttle !== undefined,
    });
    const both = multifdParameters(options);
    await setParameters(destination, both);
    await setParameters(source, { ...both, ...sourceParameters(options) });
    const stopBefore = source.lastStopAt;
    const startedAt = performance.now();
    await startBothEnds(source, destination, uri, options.incomingUri ?? uri);
    await waitForStatus(source, ["completed"], timeoutMs);
    await checkDestination(destination, LOAD_WAIT_MS);
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
        errorMessage(error)
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

/** Auto-converge's steps as QEMU's percent parameters. */
function throttleParameters(steps: ThrottleSteps): Record<string, number> {
  const percent = (share: number) => Math.round(share * 100);
  return {
    "max-cpu-throttle": percent(steps.max),
    ...(steps.initial !== undefined ? { "cpu-throttle-initial": percent(steps.initial) } : {}),
    ...(steps.step !== undefined ? { "cpu-throttle-increment": percent(steps.step) } : {}),
  };
}

function sourceParameters(options: QemuMigrationOptions): Record<string, unknown> {
  return {
    ...(options.maxBandwidth !== undefined ? { "max-bandwidth": options.maxBandwidth } : {}),
    ...(options.downtimeLimitMs !== undefined ? { "downtime-limit": options.downtimeLimitMs } : {}),
    ...(options.throttle ? throttleParameters(options.throttle) : {}),
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
