/**
 * QEMU's side of the comparison: QEMU's own live migration of every guest
 * of the gang at once, as a host evacuation would start them, from the
 * source host to destinations waiting on the target host.
 *
 * @module
 */
import { QemuGuest } from "../qemu/guest.ts";
import { type QemuMigrationResult, runQemuMigration } from "../qemu/qemu_migration.ts";
import type { BootedGang } from "./gang_spec.ts";
import type { MigrationOutcome } from "./measurement.ts";
import type { LabSession } from "./session.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";
import { freePortRun } from "./_streams.ts";
import { secondsBetween, wallClockMs } from "./_time.ts";
import type { SerialRecorder } from "./serial_recorder.ts";

/** Options of {@linkcode runQemuMethod}. */
export interface QemuMethodOptions {
  /** "zstd": multifd (2 channels, QEMU's default) with zstd compression. Default "none". */
  compression?: "none" | "zstd";
  /** QEMU's auto-converge, by these steps. Default: off. */
  throttle?: ThrottleSteps;
  /** Follows each destination's serial log from its start (the application's view). */
  recorder?: SerialRecorder;
}

/** First TCP port of QEMU's migration streams at the target host, one per guest. */
const MIGRATION_PORT = 4400;

/**
 * Migrates a booted gang with QEMU's own live migration, every guest at
 * once, with QEMU's default settings (its 128 MiB/s per-migration cap
 * included; zero pages are sent as a few bytes each). The destinations are
 * started and waiting before the clock starts; the TMT runs from the
 * first `migrate` to the last destination's RESUME event. In loopback mode
 * the link's rate is shared out as each migration's `max-bandwidth`.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-read`, `--allow-write`.
 *
 * @param session The lab session
 * @param gang The booted gang; its sources are left paused (`postmigrate`)
 * @param options Compression
 * @returns What the migration did; the destinations run, tracked by the session
 * @throws Error naming the guests that failed
 *
 * @example
 * ```ts
 * import { runQemuMethod } from "./qemu_method.ts";
 * import { DEFAULT_LAB_CONFIG } from "./experiment.ts";
 * import { bootGang } from "./gang_spec.ts";
 * import { LabSession } from "./session.ts";
 *
 * await using lab = await LabSession.open();
 * const gang = await bootGang(lab, DEFAULT_LAB_CONFIG, "q");
 * const outcome = await runQemuMethod(lab, gang);
 * console.log(outcome.bytesOnWire, outcome.tmtSeconds);
 * ```
 */
export async function runQemuMethod(
  session: LabSession,
  gang: BootedGang,
  options: QemuMethodOptions = {},
): Promise<MigrationOutcome> {
  const net = session.network;
  const sources = gang.guests;
  const started = await Promise.allSettled(
    sources.map((source) =>
      QemuGuest.startDestination(source.machine, {
        name: source.name,
        ramPath: session.ramPath("target", source.name),
        runDir: session.hostRunDir("target"),
        commandPrefix: session.prefix("target"),
        signal: session.signal,
      }).then((guest) => session.track(guest))
    ),
  );
  const failedStart = started.find((result) => result.status === "rejected");
  if (failedStart) throw failedStart.reason;
  const destinations = started.map((result) => (result as PromiseFulfilledResult<QemuGuest>).value);
  for (const [i, destination] of destinations.entries()) {
    options.recorder?.follow(sources[i]!.name, destination.serialLog);
  }
  const firstPort = net.mode === "netns" ? MIGRATION_PORT : freePortRun(sources.length);
  const zstd = options.compression === "zstd";
  const cap = session.loopbackCap;
  const before = await net.bytes();
  const t0 = performance.now();
  const startMs = wallClockMs();
  const results = await Promise.allSettled(
    sources.map((source, i) =>
      runQemuMigration(source, destinations[i]!, {
        uri: `tcp:${net.target.address}:${firstPort + i}`,
        ...(zstd ? { multifd: true, compression: "zstd" as const } : {}),
        ...(cap ? { maxBandwidth: Math.floor(cap / sources.length) } : {}),
        ...(options.throttle ? { throttle: options.throttle } : {}),
      })
    ),
  );
  const end = Math.max(...destinations.map((d) => d.lastResumeAt ?? performance.now()));
  const after = await net.bytes();
  const failures = results.flatMap((result) =>
    result.status === "rejected" ? [String(result.reason?.message ?? result.reason)] : []
  );
  if (failures.length > 0) {
    throw new Error(`Cannot migrate the gang with QEMU: ${failures.join("; ")}`);
  }
  const done = results.map((result) =>
    (result as PromiseFulfilledResult<QemuMigrationResult>).value
  );
  return {
    bytesOnWire: after.sourceToTarget - before.sourceToTarget,
    bytesBack: after.targetToSource - before.targetToSource,
    toolBytes: done.reduce((sum, r) => sum + r.transferredBytes, 0),
    tmtSeconds: secondsBetween(t0, end),
    downtimeMs: done.map((r) => r.downtimeMs),
    moved: sources.map((source, i) => ({ source, destination: destinations[i]! })),
    window: { startMs, endMs: performance.timeOrigin + end },
  };
}
