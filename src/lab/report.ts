/**
 * The lab's report: the JSON document of `deno task lab -- --json FILE`,
 * the ratios, and the verdict on the goals (the printed summary is
 * summary.ts). Pure functions: no permissions needed.
 *
 * @module
 */
import type { LabResult } from "./experiment.ts";
import type { CompressionReport } from "../transfer/compression_policy.ts";
import type { LiveRoundsEnd } from "../plan/convergence.ts";
import type { GangwayBreakdown, GuestRam, LabMethod, MethodResult } from "./measurement.ts";
import { knownQemuIssue, type LostGuest, lostGuests } from "./lost_guests.ts";
import { parseRate } from "./link_rate.ts";
import { round } from "./_numbers.ts";
import type { ApplicationView } from "./app_view.ts";

/** One method in the JSON report. */
export interface MethodJson {
  /** Bytes the link carried from source to target (kernel counters). */
  bytesOnWire: number;
  /** First migration started to last guest running at the target, in seconds. */
  tmtSeconds: number;
  /** Downtime of each guest in ms (source paused to destination running). */
  downtimeMs: number[];
  /** Gangway only: rounds, the final one included. */
  rounds?: number;
  /** Gangway only: the target found every guest's RAM identical. */
  verified?: boolean;
  /** Gangway only: why its live rounds ended ("converged", "round limit", "stalled", "content room"). */
  liveRoundsEnded?: LiveRoundsEnd;
  /** Extra, gangway only: "tls" (its default) or "tcp" (`--insecure`). */
  transport?: "tls" | "tcp";
  /** Extra, gangway only: its compression of page data (mode, frames, bytes before and after). */
  compression?: CompressionReport;
  /** Guests that went on at the target with their checksum ok. */
  resumed: number;
  /** Extra: bytes the method itself counted (QEMU: before compression). */
  toolBytes: number;
  /** Extra: bytes the link carried back, target to source. */
  bytesBack: number;
  /** Extra: seconds the gang took to boot (before, and not part of, the migration). */
  bootSeconds: number;
  /** Extra: the host's 1-minute load average when the migration started. */
  loadAverage: number | null;
  /** Extra: the memory made ready just before the migration, and how long that took (docs/lab.md). */
  warmedMemory: { bytes: number; seconds: number };
  /** Extra: the guests it lost (not alive and intact at the target), and why. */
  lost: LostGuest[];
  /** Extra, QEMU methods that lost guests: the known QEMU bug that likely explains it. */
  knownIssue?: string;
  /** Extra: where the guests kept their RAM ("file" or "anonymous"). */
  ramBackend: GuestRam;
  /** Extra: whether that RAM was in huge pages at the source (absent: not recorded). */
  hugePages?: boolean;
  /** Extra: QEMU's version. */
  qemuVersion: string;
  /** Extra: QEMU's accelerator. */
  accelerator: string;
  /** Extra: processes the kernel's OOM killer killed while the method ran (null: unknown). */
  oomKills: number | null;
  /** Extra, gangway only: where its time went. */
  breakdown?: GangwayBreakdown;
}

/** Traffic and TMT of gangway divided by a compared method's. */
export interface Ratios {
  /** Bytes on the link. */
  traffic: number;
  /** Total migration time. */
  tmt: number;
}

/**
 * The JSON report. The fields of issue 5 come first, in its order; the
 * rest are documented extras (docs/lab.md).
 */
export interface LabJson {
  /** Guests in the gang. */
  guests: number;
  /** RAM of each guest in bytes. */
  memoryBytes: number;
  /** The link rate, as given ("1gbit", "none"). */
  link: string;
  /** "idle" or "busy". */
  workload: string;
  /** Gangway's measurement. */
  gangway: MethodJson;
  /** QEMU's default live migration, when compared. */
  qemu?: MethodJson;
  /** QEMU's live migration with multifd and zstd, when compared. */
  qemuZstd?: MethodJson;
  /** Gangway's bytes on the link / the best compared QEMU method's (null: none compared). */
  trafficRatio: number | null;
  /** Gangway's TMT / the best compared QEMU method's (null: none compared). */
  tmtRatio: number | null;
  /** Extra: the method the two ratios above divide by: the compared one of the shortest TMT. */
  ratioBase: LabMethod | null;
  /** Extra: gangway's ratios to every compared method, by JSON key. */
  ratios: Record<string, Ratios>;
  /** Extra: compared methods that did not complete, by JSON key, and why (absent when none). */
  failed?: Record<string, string>;
  /**
   * For `pgbench` and `web`: each method's application view, by the same
   * keys as `ratios` (and `gangway`): before, during and after the
   * migration, the longest stall, whether the service came back, and the
   * per-second series.
   */
  application?: Record<string, ApplicationView>;
  /** Extra: seconds the guests ran between boot and migration. */
  idleSeconds: number;
  /** Extra: kernel arguments added to the guests' defaults (none: KASLR on). */
  kernelArgs: string[];
  /** Extra: the guest image's files. */
  image: { kernel: string; initramfs: string };
  /** Extra: how the two hosts were made. */
  network: { mode: string; description: string; reason: string };
  /** Extra: the memory estimated for the run's peak, and what was available before it. */
  memory: LabResult["memory"];
  /** Extra: the goals, judged against the best QEMU method (from 4 guests on, when one was compared). */
  goals: GoalVerdict[];
  /** Extra: the command that reproduces this run. */
  command: string;
  /** Extra: when it started, ISO 8601. */
  startedAt: string;
  /** Extra: how long the whole run took, boots included. */
  seconds: number;
}

/** One goal of issue 5, judged. */
export interface GoalVerdict {
  /** What the goal says. */
  goal: string;
  /** What was measured, in words. */
  measured: string;
  /** True when met. */
  met: boolean;
}

/** The goals: from 4 guests on, against the best QEMU method of the same run. */
const GOAL_MIN_GUESTS = 4;
const GOAL_TRAFFIC = 0.5;
/** TMT on a link of 1 Gbit/s or slower, where bytes decide the time. */
const GOAL_TMT_SLOW_LINK = 0.6;
/** TMT on a faster link, or none. */
const GOAL_TMT_FAST_LINK = 0.8;
/** TMT of guests that keep writing (any workload but idle): their rounds must converge first. */
const GOAL_TMT_WRITING = 0.8;
const GOAL_DOWNTIME_MS = 100;
const GIGABIT = 1e9;

/**
 * The JSON key of a method: "gangway", "qemu", "qemuZstd".
 *
 * @param method The method
 * @returns Its key in the JSON report
 */
export function methodKey(method: LabMethod): string {
  return method.replace(/-(\w)/g, (_, letter: string) => letter.toUpperCase());
}

/**
 * The method the ratios and the goals divide by: the best QEMU method of
 * the run, the compared one of the shortest TMT (fewest bytes on a tie):
 * what a user would switch on instead of gangway.
 *
 * @param result The experiment
 * @returns The best compared method's measurement; undefined when none was compared
 */
export function ratioBase(result: LabResult): MethodResult | undefined {
  const compared = result.methods.filter((m) => m.method !== "gangway");
  return compared.sort((a, b) => a.tmtSeconds - b.tmtSeconds || a.bytesOnWire - b.bytesOnWire)[0];
}

/**
 * Gangway's measurement in an experiment.
 *
 * @param result The experiment
 * @returns Gangway's measurement
 * @throws Error when gangway was not run
 */
export function gangwayOf(result: LabResult): MethodResult {
  const gangway = result.methods.find((m) => m.method === "gangway");
  if (!gangway) throw new Error("Cannot report the lab run: gangway was not measured");
  return gangway;
}

/**
 * Gangway's traffic and TMT divided by another method's.
 *
 * @param gangway Gangway's measurement
 * @param other The other method's
 * @returns The two ratios, to 3 decimals
 */
export function ratiosOf(gangway: MethodResult, other: MethodResult): Ratios {
  return {
    traffic: round(gangway.bytesOnWire / other.bytesOnWire, 3),
    tmt: round(gangway.tmtSeconds / other.tmtSeconds, 3),
  };
}

/**
 * Judges the goals against the best QEMU method of the run (see
 * {@linkcode ratioBase}): for idle guests, bytes on the link at most 0.5x
 * its bytes and TMT at most 0.6x its TMT on a link of 1 Gbit/s or slower
 * (0.8x on a faster link, or none); for guests that keep writing (any
 * other workload), live rounds that converged and TMT at most 0.8x its
 * TMT; for all, the worst guest's downtime at most 100 ms and at most its
 * worst. They apply from 4 guests on, when a QEMU method was compared.
 *
 * @param result The experiment
 * @returns The verdicts (empty below 4 guests, or with nothing compared)
 */
export function goalVerdicts(result: LabResult): GoalVerdict[] {
  const base = ratioBase(result);
  if (result.config.guests < GOAL_MIN_GUESTS || !base) return [];
  const gangway = gangwayOf(result);
  const ratios = ratiosOf(gangway, base);
  const worst = (m: MethodResult) => Math.max(...m.downtimeMs);
  const name = base.method;
  const rate = parseRate(result.link);
  const idle = result.config.workload === "idle";
  const goalTmt = !idle
    ? GOAL_TMT_WRITING
    : rate !== null && rate <= GIGABIT
    ? GOAL_TMT_SLOW_LINK
    : GOAL_TMT_FAST_LINK;
  const ended = gangway.gangway?.liveRoundsEnded;
  return [
    idle
      ? {
        goal: `bytes on the link <= ${GOAL_TRAFFIC}x ${name}`,
        measured: `${againstGoal(ratios.traffic, GOAL_TRAFFIC)}x`,
        met: ratios.traffic <= GOAL_TRAFFIC,
      }
      : {
        goal: "the live rounds converge",
        measured: ended ? `they ended: ${ended}` : "not reported",
        met: ended === "converged",
      },
    {
      goal: `TMT <= ${goalTmt}x ${name}`,
      measured: `${againstGoal(ratios.tmt, goalTmt)}x`,
      met: ratios.tmt <= goalTmt,
    },
    {
      goal: `worst downtime <= ${GOAL_DOWNTIME_MS} ms`,
      measured: `${worst(gangway).toFixed(0)} ms`,
      met: worst(gangway) <= GOAL_DOWNTIME_MS,
    },
    {
      goal: `worst downtime <= ${name}'s worst`,
      measured: `${worst(gangway).toFixed(0)} ms vs ${worst(base).toFixed(0)} ms`,
      met: worst(gangway) <= worst(base),
    },
  ];
}

/**
 * The JSON report of an experiment.
 *
 * @param result The experiment
 * @param command The command line that ran it
 * @returns The document (write it with `JSON.stringify`)
 *
 * @example
 * ```ts
 * import { labJson } from "./report.ts";
 * import type { LabResult } from "./experiment.ts";
 *
 * declare const result: LabResult;
 * await Deno.writeTextFile("lab.json", JSON.stringify(labJson(result, "deno task lab"), null, 2));
 * ```
 */
export function labJson(result: LabResult, command: string): LabJson {
  const gangway = gangwayOf(result);
  const base = ratioBase(result);
  const byKey: Record<string, MethodJson> = {};
  const ratios: Record<string, Ratios> = {};
  for (const method of result.methods) {
    byKey[methodKey(method.method)] = methodJson(method);
    if (method.method !== "gangway") ratios[methodKey(method.method)] = ratiosOf(gangway, method);
  }
  const baseRatios = base ? ratiosOf(gangway, base) : undefined;
  const viewed = result.methods.filter((m) => m.application);
  const application = Object.fromEntries(
    viewed.map((m) => [methodKey(m.method), m.application!]),
  );
  return {
    guests: result.config.guests,
    memoryBytes: result.config.memoryMiB * 2 ** 20,
    link: result.link,
    workload: result.config.workload,
    ...byKey as { gangway: MethodJson },
    trafficRatio: baseRatios?.traffic ?? null,
    tmtRatio: baseRatios?.tmt ?? null,
    ratioBase: base?.method ?? null,
    ratios,
    ...(result.failed
      ? { failed: Object.fromEntries(result.failed.map((f) => [methodKey(f.method), f.error])) }
      : {}),
    ...(viewed.length > 0 ? { application } : {}),
    idleSeconds: result.config.idleSeconds,
    kernelArgs: result.config.kernelArgs,
    image: result.image,
    network: result.network,
    memory: result.memory,
    goals: goalVerdicts(result),
    command,
    startedAt: result.startedAt,
    seconds: result.seconds,
  };
}

function methodJson(m: MethodResult): MethodJson {
  return {
    bytesOnWire: m.bytesOnWire,
    tmtSeconds: round(m.tmtSeconds, 3),
    downtimeMs: m.downtimeMs.map((ms) => round(ms, 1)),
    ...(m.gangway ? { rounds: m.gangway.rounds, verified: m.gangway.verified } : {}),
    ...(m.gangway?.liveRoundsEnded ? { liveRoundsEnded: m.gangway.liveRoundsEnded } : {}),
    resumed: m.resumed,
    ...(m.gangway ? { transport: m.gangway.transport, compression: m.gangway.compression } : {}),
    toolBytes: m.toolBytes,
    bytesBack: m.bytesBack,
    bootSeconds: m.bootSeconds,
    loadAverage: Number.isFinite(m.loadAverage) ? m.loadAverage : null,
    warmedMemory: { bytes: m.warmedMemory.bytes, seconds: round(m.warmedMemory.seconds, 3) },
    lost: lostGuests(m),
    ...(knownQemuIssue(m) ? { knownIssue: knownQemuIssue(m) } : {}),
    ramBackend: m.ram,
    ...(m.hugePages !== undefined ? { hugePages: m.hugePages } : {}),
    qemuVersion: m.qemuVersion,
    accelerator: m.accelerator,
    oomKills: m.oomKills,
    ...(m.gangway ? { breakdown: m.gangway.breakdown } : {}),
  };
}

/** A ratio to 2 decimals, or 3 when 2 would round it onto the goal it is judged against. */
function againstGoal(ratio: number, goal: number): string {
  return ratio !== goal && Number(ratio.toFixed(2)) === goal ? ratio.toFixed(3) : ratio.toFixed(2);
}
