/**
 * The application's view of a migration: what the guests' workloads
 * (pgbench, wrk against nginx) completed each second before, during and
 * after it, from their serial lines **time-stamped by the host when each
 * line arrived**. A paused guest's clock stops, so its own figures never
 * show the pause; the host's arrival times do. Pure functions: no
 * permissions needed (src/lab/serial_recorder.ts records the lines).
 *
 * @module
 */
import { parseWorkloadLine } from "./app_lines.ts";
import { median, round } from "./_numbers.ts";

/** A serial line and when the host saw it arrive (milliseconds since the epoch). */
export interface ArrivedLine {
  /** Host wall clock when the line was read, in ms since the epoch. */
  atMs: number;
  /** The line, without its end. */
  text: string;
}

/** The host times that cut a recording into before, during and after (ms since the epoch). */
export interface AppWindow {
  /** Recording started (the workload ran in every guest). */
  recordStartMs: number;
  /** The migration started (gangway: its first RAM scanned; QEMU: the first `migrate`). */
  startMs: number;
  /** The switch-over ended: the last destination runs. */
  endMs: number;
  /** Recording stopped. */
  recordEndMs: number;
}

/** The gang's figures over one part of the recording. */
export interface WindowFigures {
  /** Length of the part, in seconds. */
  seconds: number;
  /** Transactions or requests completed per second by the whole gang. */
  tps: number;
  /**
   * The median over the part of each guest-second's p99 latency in ms
   * (pgbench: the p99 of the transactions of one second of the guest's
   * clock; web: the p99 of one wrk run of about a second); null when none.
   */
  p99Ms: number | null;
  /** The highest of those p99s: the worst second; null when none. */
  worstP99Ms: number | null;
}

/** One second of the series, relative to the migration's start. */
export interface SeriesPoint {
  /** Seconds from the migration's start to the start of this second (negative before it). */
  t: number;
  /** Transactions or requests the gang completed in this second of host time. */
  tps: number;
  /** The worst guest-second p99 in ms among the reports mapped into this second; null when none. */
  p99Ms: number | null;
}

/** The application's view of one method's migration. */
export interface ApplicationView {
  /** Guests recorded. */
  guests: number;
  /** From the recording's start to the migration's start. */
  before: WindowFigures;
  /** The migration, up to the end of the switch-over. */
  during: WindowFigures;
  /** From the end of the switch-over to the last report received (what came after is not known). */
  after: WindowFigures;
  /**
   * The longest gap, over every guest, with no completed work as the host
   * saw it, among the gaps that end after the migration started: from the
   * arrival of a report of work to the start of the next report of work
   * (its arrival less the guest time it covers); for a guest that did not
   * come back, from its last report of work to the end of the recording.
   * A pause counts whole (the guest's clock stops with it); so does a
   * guest that runs but completes nothing. Null when no gap was seen.
   */
  longestStallMs: number | null;
  /** The same over the gaps that ended before the migration: what this machine gives without one. */
  longestStallBeforeMs: number | null;
  /** Every guest reported completed work after the switch-over (at the target). */
  cameBack: boolean;
  /** Seconds from the migration's start to the end of its switch-over (where the plot marks it). */
  migrationSeconds: number;
  /** The gang's throughput, second by second of host time. */
  series: SeriesPoint[];
}

/** Work completed over an interval of host time. */
interface WorkPiece {
  fromMs: number;
  toMs: number;
  amount: number;
}

/** A p99 figure placed in host time. */
interface P99Sample {
  atMs: number;
  p99Ms: number;
}

/** What one guest's lines give. */
interface GuestFigures {
  pieces: WorkPiece[];
  /** When its last work report arrived (-Infinity: none). */
  lastReportMs: number;
  samples: P99Sample[];
  stallMs: number | null;
  stallBeforeMs: number | null;
  cameBack: boolean;
}

/** A pgbench progress line covers the second before it (`-P 1`) when nothing came before. */
const DEFAULT_REPORT_SECONDS = 1;

/**
 * The application's view of a recording: the gang's throughput and
 * latency before, during and after the migration, the longest stall, and
 * whether every guest's workload went on after the switch-over.
 *
 * Each work report covers the guest time since the previous one (pgbench)
 * or its run (wrk); its work is spread evenly over that much host time
 * just before the report arrived, and counted in the parts and seconds
 * that overlap it. A pgbench latency report for guest second S is placed
 * where the first progress line at or after S + 1 arrived.
 *
 * @param guests Each guest's lines (source then destination), in arrival order
 * @param window The recording's and the migration's times
 * @returns The view
 *
 * @example
 * ```ts
 * import { applicationView } from "./app_view.ts";
 *
 * const view = applicationView([[
 *   { atMs: 1000, text: "gangway-pgbench progress: 100.0 s, 50.0 tps, lat 1 ms stddev 0, 0 failed" },
 *   { atMs: 2000, text: "gangway-pgbench progress: 101.0 s, 50.0 tps, lat 1 ms stddev 0, 0 failed" },
 * ]], { recordStartMs: 0, startMs: 1000, endMs: 1500, recordEndMs: 2000 });
 * console.log(view.after.tps); // 50
 * ```
 */
export function applicationView(
  guests: readonly (readonly ArrivedLine[])[],
  window: AppWindow,
): ApplicationView {
  const figures = guests.map((lines) => guestFigures(lines, window));
  const pieces = figures.flatMap((f) => f.pieces);
  const samples = figures.flatMap((f) => f.samples);
  const longest = (pick: (f: GuestFigures) => number | null) => {
    const stalls = figures.flatMap((f) => pick(f) ?? []);
    return stalls.length > 0 ? round(Math.max(...stalls), 0) : null;
  };
  // What was done after the last report is not known yet: the recording ends there.
  const lastReportMs = Math.max(...figures.map((f) => f.lastReportMs));
  const reportedUntilMs = Math.max(window.endMs, Math.min(window.recordEndMs, lastReportMs));
  const part = (fromMs: number, toMs: number, last = false) =>
    windowFigures(pieces, samples, fromMs, toMs, last);
  return {
    guests: guests.length,
    before: part(window.recordStartMs, window.startMs),
    during: part(window.startMs, window.endMs),
    after: part(window.endMs, reportedUntilMs, true),
    longestStallMs: longest((f) => f.stallMs),
    longestStallBeforeMs: longest((f) => f.stallBeforeMs),
    cameBack: figures.length > 0 && figures.every((f) => f.cameBack),
    migrationSeconds: round((window.endMs - window.startMs) / 1000, 3),
    series: series(pieces, samples, { ...window, recordEndMs: reportedUntilMs }),
  };
}

/** One guest's work pieces, p99 samples, longest stall and whether it came back. */
function guestFigures(lines: readonly ArrivedLine[], window: AppWindow): GuestFigures {
  const works: { atMs: number; guestClock: number }[] = [];
  const pieces: WorkPiece[] = [];
  const samples: P99Sample[] = [];
  const latencies: { guestSecond: number; p99Ms: number }[] = [];
  let stallMs: number | null = null;
  let stallBeforeMs: number | null = null;
  let lastWorkMs: number | undefined;
  let cameBack = false;
  for (const { atMs, text } of lines) {
    const report = parseWorkloadLine(text);
    if (!report) continue;
    if (report.kind === "latency") {
      if (report.count > 0) latencies.push(report);
      continue;
    }
    const previous = works.at(-1);
    const covered = report.seconds ??
      (previous ? report.guestClock - previous.guestClock : DEFAULT_REPORT_SECONDS);
    if (covered > 0) {
      pieces.push({ fromMs: atMs - covered * 1000, toMs: atMs, amount: report.rate * covered });
    }
    if (covered > 0 && report.rate > 0) {
      const workStartMs = atMs - covered * 1000;
      if (lastWorkMs !== undefined) {
        const gap = Math.max(0, workStartMs - lastWorkMs);
        if (workStartMs > window.startMs) stallMs = Math.max(stallMs ?? 0, gap);
        else stallBeforeMs = Math.max(stallBeforeMs ?? 0, gap);
      }
      lastWorkMs = atMs;
    }
    if (report.p99Ms !== undefined) samples.push({ atMs, p99Ms: report.p99Ms });
    if (atMs > window.endMs && report.rate > 0) cameBack = true;
    works.push({ atMs, guestClock: report.guestClock });
  }
  // A guest that never came back stalled from its last work to the end of the recording.
  if (lastWorkMs !== undefined && !cameBack) {
    stallMs = Math.max(stallMs ?? 0, window.recordEndMs - lastWorkMs);
  }
  const last = works.at(-1);
  for (const { guestSecond, p99Ms } of latencies) {
    const reported = works.find((w) => w.guestClock >= guestSecond + 1);
    if (reported) samples.push({ atMs: reported.atMs, p99Ms });
  }
  return {
    pieces,
    lastReportMs: last?.atMs ?? -Infinity,
    samples,
    stallMs,
    stallBeforeMs,
    cameBack,
  };
}

/** Throughput and p99s of the gang over [fromMs, toMs), or [fromMs, toMs] for the `last` part. */
function windowFigures(
  pieces: readonly WorkPiece[],
  samples: readonly P99Sample[],
  fromMs: number,
  toMs: number,
  last: boolean,
): WindowFigures {
  const seconds = Math.max(0, (toMs - fromMs) / 1000);
  const p99s = samples.filter((s) => s.atMs >= fromMs && (s.atMs < toMs || last && s.atMs === toMs))
    .map((s) => s.p99Ms);
  return {
    seconds: round(seconds, 3),
    tps: seconds > 0 ? round(workBetween(pieces, fromMs, toMs) / seconds, 1) : 0,
    p99Ms: p99s.length > 0 ? round(median(p99s), 1) : null,
    worstP99Ms: p99s.length > 0 ? round(Math.max(...p99s), 1) : null,
  };
}

/** The work of the pieces that falls in [fromMs, toMs), each spread evenly over its interval. */
function workBetween(pieces: readonly WorkPiece[], fromMs: number, toMs: number): number {
  let work = 0;
  for (const piece of pieces) {
    const overlap = Math.min(toMs, piece.toMs) - Math.max(fromMs, piece.fromMs);
    if (overlap > 0) work += piece.amount * overlap / (piece.toMs - piece.fromMs);
  }
  return work;
}

/** One point a second of host time, seconds counted from the migration's start. */
function series(
  pieces: readonly WorkPiece[],
  samples: readonly P99Sample[],
  window: AppWindow,
): SeriesPoint[] {
  const points: SeriesPoint[] = [];
  const first = Math.floor((window.recordStartMs - window.startMs) / 1000);
  const last = Math.ceil((window.recordEndMs - window.startMs) / 1000);
  for (let t = first; t < last; t++) {
    const fromMs = Math.max(window.recordStartMs, window.startMs + t * 1000);
    const toMs = Math.min(window.recordEndMs, window.startMs + (t + 1) * 1000);
    if (toMs <= fromMs) continue;
    const p99s = samples.filter((s) => s.atMs >= fromMs && s.atMs < toMs).map((s) => s.p99Ms);
    points.push({
      t,
      tps: round(workBetween(pieces, fromMs, toMs) / ((toMs - fromMs) / 1000), 1),
      p99Ms: p99s.length > 0 ? round(Math.max(...p99s), 1) : null,
    });
  }
  return points;
}
