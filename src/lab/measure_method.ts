/**
 * One method measured in a lab experiment: a fresh gang booted on the
 * source host, left running for its idle time, migrated by that method,
 * every guest checked at the target (and the application's view cut at
 * the migration), then every guest quit. `experiment.ts` runs it for
 * gangway and each QEMU method compared.
 *
 * @module
 */
import { type BootedGang, bootGang, closeGuests, gangImages, type GangSpec } from "./gang_spec.ts";
import { type ApplicationView, applicationView } from "./app_view.ts";
import type { SerialRecorder } from "./serial_recorder.ts";
import { formatApplication } from "./summary.ts";
import { wallClockMs } from "./_time.ts";
import { delay } from "../_delay.ts";
import { type DiskStorage, runGangwayMethod } from "./gangway_method.ts";
import type { GuestRam, LabMethod, MethodResult, MigrationOutcome } from "./measurement.ts";
import { hugePageBytes, memoryToWarm, oomKillCount } from "./memory_budget.ts";
import { describeWarmed, warmMemory } from "./warm_memory.ts";
import { runTool } from "./netns_exec.ts";
import { runQemuMethod } from "./qemu_method.ts";
import { checkResumed } from "./resumed.ts";
import type { LabSession } from "./session.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { FinalRounds } from "../gang_migration.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";
import { errorMessage } from "../_errors.ts";

/** Options of {@linkcode measureMethod}: how gangway runs, and the QEMU methods' RAM. */
export interface MeasureOptions {
  /** Gangway over plain TCP instead of TLS. Default false. */
  insecure?: boolean;
  /** Gangway's compression of page data. Default "auto". */
  compression?: CompressionMode;
  /** How gangway ends the gang. Default "gang". */
  finalRounds?: FinalRounds;
  /**
   * Where a QEMU method's guests keep their RAM: "anonymous" (QEMU's
   * default, how users run guests for its own migration) or "file" (a
   * shared file, as gangway's). Gangway's are always in files. Default
   * "anonymous".
   */
  baselineRam?: GuestRam;
  /** Gangway's disks: shared with host B, or copied to it. Default "shared". */
  storage?: DiskStorage;
  /** Auto-converge for every method, by the same steps (see `LabConfig.throttle`). Default: off. */
  throttle?: ThrottleSteps;
  /**
   * RAM files (gangway's, and QEMU's with `baselineRam` "file") on a tmpfs
   * of huge pages at the source (huge_tmpfs.ts), where one can be mounted.
   * Default false.
   */
  hugePageFiles?: boolean;
}

const TAG: Record<LabMethod, string> = { gangway: "g", qemu: "q", "qemu-zstd": "z" };

/**
 * Seconds the workloads are recorded after the switch-over (`pgbench`,
 * `web`): the application's view's `after`. The guests are checked
 * meanwhile.
 */
export const AFTER_SWITCHOVER_SECONDS = 10;

/** A method that failed while the kernel's OOM killer killed processes: its why, and how many. */
export class OomKilledDuring extends Error {
  /** Processes the OOM killer killed meanwhile. */
  readonly oomKills: number;

  constructor(cause: unknown, oomKills: number) {
    super(
      `${errorMessage(cause)} (meanwhile the kernel's OOM killer killed ${oomKills} processes)`,
      {
        cause,
      },
    );
    this.oomKills = oomKills;
  }
}

/**
 * Measures one method: boots a fresh gang on the source host, leaves it
 * running for the idle time, migrates it, checks every guest at the target,
 * then quits every guest and removes their RAM files.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-read`, `--allow-write`
 * (and what the gang runner needs: see `runGangwayMethod`).
 *
 * @param session The lab session
 * @param method The method
 * @param spec The gang
 * @param options Gangway's transport and compression
 * @returns What was measured
 * @throws Error when the gang cannot be booted or migrated; what was started is ended
 *
 * @example
 * ```ts
 * import { DEFAULT_LAB_CONFIG } from "./experiment.ts";
 * import { measureMethod } from "./measure_method.ts";
 * import { LabSession } from "./session.ts";
 *
 * await using lab = await LabSession.open();
 * const qemu = await measureMethod(lab, "qemu", { ...DEFAULT_LAB_CONFIG, guests: 2 });
 * console.log(`${qemu.bytesOnWire} bytes, ${qemu.tmtSeconds} s`);
 * ```
 */
export async function measureMethod(
  session: LabSession,
  method: LabMethod,
  spec: GangSpec,
  options: MeasureOptions = {},
): Promise<MethodResult> {
  const before = await oomKillCount();
  const killed = async () => {
    const after = await oomKillCount();
    return before === null || after === null ? null : after - before;
  };
  let measured: Omit<MethodResult, "oomKills">;
  try {
    measured = await bootMigrateCheck(session, method, spec, options);
  } catch (error) {
    const oomKills = await killed();
    if (!oomKills) throw error;
    throw new OomKilledDuring(error, oomKills);
  }
  const oomKills = await killed();
  if (oomKills) {
    session.say(`${method}: the kernel's OOM killer killed ${oomKills} processes meanwhile`);
  }
  return { ...measured, oomKills };
}

/** {@linkcode measureMethod} but for the OOM killer's count. */
async function bootMigrateCheck(
  session: LabSession,
  method: LabMethod,
  spec: GangSpec,
  options: MeasureOptions,
): Promise<Omit<MethodResult, "oomKills">> {
  const say = (line: string) => session.say(`${method}: ${line}`);
  const ram: GuestRam = method === "gangway" ? "file" : options.baselineRam ?? "anonymous";
  const images = [...new Set(gangImages(spec))].join(", ");
  say(
    `booting ${spec.guests} guests of ${spec.memoryMiB} MiB (${images}; ${spec.workload}, RAM: ${ram})`,
  );
  const gang = await bootGang(session, spec, TAG[method] + session.nextRun(), {
    ram,
    hugePageFiles: options.hugePageFiles,
  });
  let outcome: MigrationOutcome | undefined;
  try {
    const first = gang.guests[0]!;
    const { major, minor, micro } = first.qmp.version;
    const qemu = {
      qemuVersion: `${major}.${minor}.${micro}`,
      accelerator: first.machine.accelerator,
    };
    // As the guests run before the migration: what the kernel gave them, not what was asked.
    const hugePages = await hugePageBytes(gang.guests.map((guest) => guest.pid)) > 0;
    const warmedMemory = await warmMemory(
      session.ramDir,
      await memoryToWarm(gang.guests.map((guest) => guest.pid)),
    );
    say(`made memory ready: ${describeWarmed(warmedMemory)} (docs/lab.md, Fairness)`);
    const loadAverage = await hostLoadAverage();
    say(`migrating (host load average ${loadAverage.toFixed(2)})`);
    const recorder = gang.recorder;
    outcome = method === "gangway"
      ? await runGangwayMethod(session, gang, { ...options, recorder })
      : await runQemuMethod(session, gang, {
        compression: method === "qemu-zstd" ? "zstd" : "none",
        throttle: options.throttle,
        recorder,
      });
    say(describeOutcome(outcome));
    // The workloads run on at the target while the guests are checked, and
    // long enough after the switch-over to show how the service came back.
    const afterMs = outcome.window.endMs + AFTER_SWITCHOVER_SECONDS * 1000;
    const [checks] = await Promise.all([
      Promise.all(
        outcome.moved.map(({ source, destination }) => checkResumed(source.serialLog, destination)),
      ),
      recorder ? delay(Math.max(0, afterMs - wallClockMs())) : undefined,
    ]);
    for (const check of checks.filter((c) => !c.resumed)) {
      say(`${check.name} did not resume: ${check.detail}`);
    }
    const resumed = checks.filter((c) => c.resumed).length;
    say(
      `${resumed}/${checks.length} guests resumed at the target (heartbeat went on, checksum ok)`,
    );
    const application = recorder && await applicationOf(recorder, gang, outcome.window);
    if (application) say(formatApplication(application));
    const { moved: _moved, window: _window, ...measured } = outcome;
    return {
      method,
      ...measured,
      ...(application ? { application } : {}),
      resumed,
      checks,
      bootSeconds: gang.bootSeconds,
      ram,
      hugePages,
      ...qemu,
      loadAverage,
      warmedMemory,
    };
  } finally {
    await gang.recorder?.stop();
    const guests = [...gang.guests, ...(outcome?.moved.map((m) => m.destination) ?? [])];
    await closeGuests(session, guests).catch(() => {});
    await session.reset();
  }
}

/**
 * The host's 1-minute load average (`/proc/loadavg`, read with `cat`: Deno
 * asks for --allow-all under /proc); NaN when it cannot be read.
 */
async function hostLoadAverage(): Promise<number> {
  try {
    return Number((await runTool("cat", ["/proc/loadavg"])).split(" ")[0]);
  } catch {
    return NaN;
  }
}

function describeOutcome(outcome: MigrationOutcome): string {
  const downtimes = outcome.downtimeMs;
  const gangway = outcome.gangway
    ? `, ${outcome.gangway.rounds} rounds, ${
      outcome.gangway.verified ? "verified" : "NOT verified"
    }`
    : "";
  return `${(outcome.bytesOnWire / 1e6).toFixed(1)} MB on the link, TMT ${
    outcome.tmtSeconds.toFixed(2)
  } s, downtime ${Math.min(...downtimes).toFixed(0)}-${
    Math.max(...downtimes).toFixed(0)
  } ms${gangway}`;
}

/** Stops the recording and cuts it at the migration's start and end. */
async function applicationOf(
  recorder: SerialRecorder,
  gang: BootedGang,
  window: { startMs: number; endMs: number },
): Promise<ApplicationView> {
  const lines = await recorder.stop();
  return applicationView(gang.guests.map((guest) => lines.get(guest.name) ?? []), {
    recordStartMs: recorder.startedMs,
    startMs: window.startMs,
    endMs: window.endMs,
    recordEndMs: recorder.stoppedMs!,
  });
}
