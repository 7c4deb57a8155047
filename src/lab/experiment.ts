/**
 * One lab experiment: the same gang, booted afresh for each method (same
 * image, same size, same workload, same idle time), migrated over the same
 * link by gangway and by each QEMU method compared, each guest checked at
 * the target.
 *
 * @module
 */
import { basename } from "node:path";
import { type BootedGang, bootGang, closeGuests, gangImages, type GangSpec } from "./gang_spec.ts";
import { type ApplicationView, applicationView } from "./app_view.ts";
import type { SerialRecorder } from "./serial_recorder.ts";
import { formatApplication } from "./summary.ts";
import { wallClockMs } from "./_time.ts";
import { delay } from "../_delay.ts";
import { type DiskStorage, runGangwayMethod } from "./gangway_method.ts";
export type { DiskStorage } from "./gangway_method.ts";
import type { GuestRam, LabMethod, MethodResult, MigrationOutcome } from "./measurement.ts";
import {
  availableMemory,
  estimateMemory,
  type MemoryEstimate,
  oomKillCount,
  refuseUnlessFits,
} from "./memory_budget.ts";
import { runTool } from "./netns_exec.ts";
import { runQemuMethod } from "./qemu_method.ts";
import { checkResumed } from "./resumed.ts";
import type { LabSession } from "./session.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { FinalRounds } from "../gang_migration.ts";
import { errorMessage } from "../_errors.ts";

/** A QEMU method gangway is compared with. */
export type ComparedMethod = Exclude<LabMethod, "gangway">;

/** What one experiment runs. */
export interface LabConfig extends GangSpec {
  /** The QEMU methods to compare gangway with, in order; the first is the ratios' base. */
  compare: ComparedMethod[];
  /** Gangway over plain TCP instead of TLS. Default false. */
  insecure?: boolean;
  /** Gangway's compression of page data. Default "auto", the engine's default. */
  gangwayCompression?: CompressionMode;
  /**
   * How gangway ends the gang (see `QemuGangOptions.finalRounds`). Default
   * the engine's: "per-guest", or "gang" with copied disks.
   */
  gangwayFinalRounds?: FinalRounds;
  /** Where the compared QEMU methods' guests keep their RAM. Default "anonymous", QEMU's default. */
  baselineRam?: GuestRam;
  /**
   * Gangway's guests' disks: on storage both hosts see, or copied to host B
   * while the RAM moves (the QEMU methods' disks stay shared). Default "shared".
   */
  storage?: DiskStorage;
}

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
}

/** What one experiment measured. */
export interface LabResult {
  /** What was run. */
  config: LabConfig;
  /** The link rate asked for. */
  link: string;
  /** The two hosts as they were made. */
  network: { mode: "netns" | "loopback"; description: string; reason: string };
  /**
   * The guest images: their names in the order they are cycled across the
   * guests, and their kernels and initramfs files (comma-separated when
   * the images differ).
   */
  image: { kernel: string; initramfs: string; names?: string[] };
  /** The memory the run was estimated to need at its peak, and what was available before it. */
  memory: { estimatedPeakBytes: number; peakMethod: LabMethod; availableBytes: number };
  /** Gangway first, then the compared methods in order. */
  methods: MethodResult[];
  /** When it started (ISO 8601). */
  startedAt: string;
  /** How long it took, boots included. */
  seconds: number;
}

/** The defaults of `deno task lab`: 4 idle guests of 256 MiB against QEMU's default migration. */
export const DEFAULT_LAB_CONFIG: Readonly<LabConfig> = {
  guests: 4,
  memoryMiB: 256,
  idleSeconds: 10,
  workload: "idle",
  kernelArgs: [],
  images: ["busybox"],
  compare: ["qemu", "qemu-zstd"],
  insecure: false,
  gangwayCompression: "auto",
  gangwayFinalRounds: "per-guest",
  baselineRam: "anonymous",
  storage: "shared",
  accelerator: "tcg",
};

const TAG: Record<LabMethod, string> = { gangway: "g", qemu: "q", "qemu-zstd": "z" };

/**
 * Seconds the workloads are recorded after the switch-over (`pgbench`,
 * `web`): the application's view's `after`. The guests are checked
 * meanwhile.
 */
export const AFTER_SWITCHOVER_SECONDS = 10;

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
 * import { DEFAULT_LAB_CONFIG, measureMethod } from "./experiment.ts";
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
    const why = errorMessage(error);
    throw new Error(`${why} (meanwhile the kernel's OOM killer killed ${oomKills} processes)`, {
      cause: error,
    });
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
  const gang = await bootGang(session, spec, TAG[method] + session.nextRun(), { ram });
  let outcome: MigrationOutcome | undefined;
  try {
    const first = gang.guests[0]!;
    const { major, minor, micro } = first.qmp.version;
    const qemu = {
      qemuVersion: `${major}.${minor}.${micro}`,
      accelerator: first.machine.accelerator,
    };
    const loadAverage = await hostLoadAverage();
    say(`migrating (host load average ${loadAverage.toFixed(2)})`);
    const recorder = gang.recorder;
    outcome = method === "gangway"
      ? await runGangwayMethod(session, gang, { ...options, recorder })
      : await runQemuMethod(session, gang, {
        compression: method === "qemu-zstd" ? "zstd" : "none",
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
      ...qemu,
      loadAverage,
    };
  } finally {
    await gang.recorder?.stop();
    const guests = [...gang.guests, ...(outcome?.moved.map((m) => m.destination) ?? [])];
    await closeGuests(session, guests).catch(() => {});
    await session.reset();
  }
}

/**
 * How gangway ends the gang in an experiment: as asked, else the engine's
 * default (guest by guest, but as a gang when disks are copied).
 */
export function finalRoundsOf(
  config: Pick<LabConfig, "gangwayFinalRounds" | "storage">,
): FinalRounds {
  return config.gangwayFinalRounds ?? (config.storage === "copy" ? "gang" : "per-guest");
}

/**
 * Runs one experiment: gangway, then each compared method, on fresh gangs
 * of the same spec over the same link.
 *
 * Requires what {@linkcode measureMethod} requires.
 *
 * @param session The lab session
 * @param config The gang and the methods compared
 * @returns Every method's measurement
 * @throws Error when any method fails
 *
 * @example
 * ```ts
 * import { DEFAULT_LAB_CONFIG, runLab } from "./experiment.ts";
 * import { LabSession } from "./session.ts";
 * import { formatSummary } from "./summary.ts";
 *
 * await using lab = await LabSession.open();
 * const result = await runLab(lab, DEFAULT_LAB_CONFIG);
 * console.log(formatSummary(result));
 * ```
 */
export async function runLab(session: LabSession, config: LabConfig): Promise<LabResult> {
  const startedAt = new Date();
  const t0 = performance.now();
  const available = await availableMemory();
  const { peak } = refuseUnlessLabFits(config, available);
  session.say(
    `memory: about ${gib(peak.bytes)} GiB at the peak (${peak.method}), ${
      gib(available)
    } GiB available`,
  );
  const methods: MethodResult[] = [];
  for (const method of ["gangway", ...config.compare] as const) {
    methods.push(
      await measureMethod(session, method, config, {
        insecure: config.insecure,
        compression: config.gangwayCompression,
        finalRounds: finalRoundsOf(config),
        baselineRam: config.baselineRam,
        storage: config.storage,
      }),
    );
  }
  const net = session.network;
  return {
    config: {
      ...config,
      kernelArgs: [...config.kernelArgs],
      images: [...config.images ?? ["busybox"]],
      compare: [...config.compare],
      insecure: config.insecure ?? false,
      gangwayCompression: config.gangwayCompression ?? "auto",
      gangwayFinalRounds: finalRoundsOf(config),
      baselineRam: config.baselineRam ?? "anonymous",
      storage: config.storage ?? "shared",
    },
    link: session.link,
    network: { mode: net.mode, description: net.describe(), reason: net.reason },
    image: await imageFiles(session, config),
    memory: { estimatedPeakBytes: peak.bytes, peakMethod: peak.method, availableBytes: available },
    methods,
    startedAt: startedAt.toISOString(),
    seconds: Math.round(performance.now() - t0) / 1000,
  };
}

/** The images of a run, for the report: names, kernels and initramfs files. */
async function imageFiles(session: LabSession, spec: GangSpec): Promise<LabResult["image"]> {
  const names = spec.images ?? ["busybox"];
  const images = await Promise.all(names.map((name) => session.guestImage(name)));
  const files = (pick: (image: (typeof images)[number]) => string) =>
    [...new Set(images.map((image) => basename(pick(image))))].join(", ");
  return { kernel: files((i) => i.kernel), initramfs: files((i) => i.initrd), names };
}

/**
 * Estimates the memory an experiment needs at its peak (its methods run
 * one after another) and refuses it when that does not fit.
 *
 * Needs no permission.
 *
 * @param config The experiment
 * @param availableBytes The memory available now (see `availableMemory`)
 * @returns The estimate, when it fits
 * @throws Error saying what it needs and what is available
 *
 * @example
 * ```ts
 * import { DEFAULT_LAB_CONFIG, refuseUnlessLabFits } from "./experiment.ts";
 * import { availableMemory } from "./memory_budget.ts";
 *
 * refuseUnlessLabFits({ ...DEFAULT_LAB_CONFIG, guests: 24, memoryMiB: 512 }, await availableMemory());
 * ```
 */
export function refuseUnlessLabFits(config: LabConfig, availableBytes: number): MemoryEstimate {
  const estimate = estimateMemory({
    guests: config.guests,
    memoryMiB: config.memoryMiB,
    workload: config.workload,
    methods: ["gangway", ...config.compare],
    baselineRam: config.baselineRam ?? "anonymous",
  });
  refuseUnlessFits(estimate, availableBytes, `${config.guests} guests of ${config.memoryMiB} MiB`);
  return estimate;
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

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
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
