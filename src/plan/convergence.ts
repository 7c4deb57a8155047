/**
 * When to stop the live rounds: pre-copy converges when the pages left to
 * send are few enough to send with the guests paused.
 *
 * @module
 */
import type { RoundPages } from "./round_planner.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";

/** Most rounds in all, unless told: {@linkcode ConvergenceOptions.maxRounds}. */
export const DEFAULT_MAX_ROUNDS = 10;

/** A live round must leave at most this share of the previous one's pages to be worth repeating. */
const SHRINK = 0.75;

/** Options of {@linkcode shouldStopLiveRounds}. */
export interface ConvergenceOptions {
  /** Most rounds in all, the final (paused) one included. Default 10. */
  maxRounds?: number;
  /**
   * Stop once a live round handled at most this many pages, or at most this
   * many are estimated changed after it (`RoundSize.changedAfter`), for each
   * pause that follows (see {@linkcode whyStopLiveRounds}'s `pauses`; with
   * guests ending one at a time, also once each guest's final round is
   * expected to carry at most this many after its catch-up round).
   * Default 2048 (8 MiB).
   */
  stopPages?: number;
  /**
   * Longest a pause may keep guests stopped for their final round, in ms, by
   * an estimate made just before the pause ({@linkcode finalRoundMs}): a
   * pause over it is not made, and the migration fails with the guests not
   * yet paused running on (QEMU's `downtime-limit`, but where QEMU goes on
   * with more rounds, gangway's rounds have already ended: they converged or
   * stalled). Default: no limit.
   */
  maxDowntimeMs?: number;
}

/** Throws a RangeError naming an option out of its range (as the CLI's flags are checked). */
export function checkConvergenceOptions(options: ConvergenceOptions): void {
  const { maxRounds, stopPages } = options;
  if (maxRounds !== undefined && !(Number.isInteger(maxRounds) && maxRounds >= 1)) {
    throw new RangeError(`maxRounds must be a positive integer (1: one pass), got ${maxRounds}`);
  }
  if (stopPages !== undefined && !(Number.isInteger(stopPages) && stopPages >= 0)) {
    throw new RangeError(`stopPages must be a whole number of pages, got ${stopPages}`);
  }
  const { maxDowntimeMs } = options;
  if (maxDowntimeMs !== undefined && !(maxDowntimeMs > 0 && Number.isFinite(maxDowntimeMs))) {
    throw new RangeError(`maxDowntimeMs must be a positive number of ms, got ${maxDowntimeMs}`);
  }
}

/**
 * How long a final round of `changedPages` keeps its guests paused on a
 * link that carries `linkBytesPerSecond`, in ms: every page taken whole (none
 * compressed, none a reference), the link's part alone. Infinite when the
 * link was never measured.
 */
export function finalRoundMs(changedPages: number, linkBytesPerSecond: number): number {
  if (changedPages === 0) return 0;
  return linkBytesPerSecond > 0 ? changedPages * PAGE_SIZE / linkBytesPerSecond * 1000 : Infinity;
}

/** Pages a round handled (sent in full, referenced or zeroed). */
export interface RoundSize {
  /** The round's number, from 1. */
  round: number;
  /** Pages it handled. */
  pagesSent: number;
  /** An estimate, made right after it, of the pages the next round would find changed. */
  changedAfter?: number;
  /** Of those, the most in one guest (without it, all are taken to be one guest's). */
  mostChangedInOneGuest?: number;
  /** Bytes it put on the wire. */
  bytesOnWire?: number;
}

/**
 * The size of a round for {@linkcode shouldStopLiveRounds}: the pages it
 * put on the wire in any form (zero pages of round 1 cost nothing).
 */
export function roundSize(
  report: {
    round: number;
    pages: RoundPages;
    changedAfter?: { pages: number; mostInOneGuest?: number };
    bytesOnWire?: number;
  },
): RoundSize {
  const p = report.pages;
  const zeros = report.round === 1 ? 0 : p.zero;
  const pagesSent = p.unique + p.dirtiedIdentical + p.unsentIdentical + p.sentIdentical + zeros;
  return {
    round: report.round,
    pagesSent,
    changedAfter: report.changedAfter?.pages,
    mostChangedInOneGuest: report.changedAfter?.mostInOneGuest,
    bytesOnWire: report.bytesOnWire,
  };
}

/** Why the live rounds end: they converged, reached the round limit, or stopped shrinking. */
export type StopReason = "converged" | "round limit" | "stalled";

/**
 * Why a migration's live rounds ended: a {@linkcode StopReason} ("stalled"
 * once the guests were slowed as far as allowed, when they could be),
 * "content room" (the content index could not take another round), or
 * "none": there were none, the gang went in one pass.
 */
export type LiveRoundsEnd = StopReason | "content room" | "none";

/**
 * Whether the next round should be the final one: the last live round was
 * small enough, or what changed since it is estimated to be (round 1
 * sends every page, so unless the gang is that small only the estimate
 * can end the rounds after it), or, with guests ending one at a time, it
 * is small enough for each guest's own catch-up round to leave its final
 * round small (catchUpsSuffice, below); the round limit is reached;
 * or the rounds stopped shrinking (the guests write as fast as we send:
 * more rounds would not make the final one smaller).
 *
 * @param pauses the pauses the gang's last pages are sent in: 1 when the
 * gang pauses at once for one final round; its guests when they end one at
 * a time, each after a live round of its own (`transferGang`'s
 * `pauseGuest`), so that each pause carries a guest's share
 * @param slowable the guests may be slowed down (auto-converge): the
 * catch-ups do not end the rounds, which go on until they converge or
 * stall, so that a stall can slow the guests
 */
export function shouldStopLiveRounds(
  history: readonly RoundSize[],
  options: ConvergenceOptions = {},
  pauses = 1,
  slowable = false,
): boolean {
  return whyStopLiveRounds(history, options, pauses, slowable) !== undefined;
}

/**
 * Why the next round should be the final one (see
 * {@linkcode shouldStopLiveRounds}, and its `pauses` and `slowable`), or undefined while
 * live rounds should go on. A caller that can slow the guests down
 * (auto-converge) may go on after "stalled": the rounds may shrink again
 * once the guests write less.
 *
 * @throws RangeError unless `pauses` is a positive integer
 */
export function whyStopLiveRounds(
  history: readonly RoundSize[],
  options: ConvergenceOptions = {},
  pauses = 1,
  slowable = false,
): StopReason | undefined {
  if (!Number.isInteger(pauses) || pauses < 1) {
    throw new RangeError(`Cannot end live rounds in ${pauses} pauses: a positive integer`);
  }
  const maxRounds = options.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const stopPages = (options.stopPages ?? 2048) * pauses;
  const last = history.at(-1);
  if (!last) return maxRounds <= 1 ? "round limit" : undefined;
  if (history.length + 1 >= maxRounds) return "round limit";
  if (last.pagesSent <= stopPages) return "converged";
  if (last.changedAfter !== undefined && last.changedAfter <= stopPages) return "converged";
  if (pauses > 1 && !slowable && catchUpsSuffice(last, pauses, options.stopPages ?? 2048)) {
    return "converged";
  }
  const before = history.at(-2);
  // Round 1 sends everything: only compare later rounds with one another. Without soft-dirty
  // bits every round re-reads all of the gang's RAM, so a round that did not shrink the next
  // one by a quarter is not worth another.
  return before && before.round > 1 && last.pagesSent >= SHRINK * before.pagesSent
    ? "stalled"
    : undefined;
}

/**
 * With guests ending one at a time, each catches up alone before its pause
 * (a live round of its own that carries what it changed), and its final
 * round carries what it writes during that catch-up. Whether that is at
 * most `stopPages` for every guest, by the last round's measure: a guest
 * that changed c pages while the gang's round put b bytes on the wire
 * writes about x = c * c * PAGE_SIZE / b pages while its catch-up sends
 * its c (writes in proportion to time, time in proportion to bytes on the
 * wire, and a changed page taken to cost a whole page there). The last
 * guest waits for the others' catch-ups first, writing about x during
 * each, so its own sends c + (pauses - 1) * x, and its final round carries
 * what it writes meanwhile. Then a further round of the gang would only
 * re-read every guest to send what the catch-ups send anyway, each closer
 * to its guest's pause: the lab's 4 busy guests rewrite 8 MiB each, and a
 * second round re-sent pages they wrote again before their catch-ups
 * (docs/design.md, "One guest at a time"; docs/lab-results/runs/ab-38).
 */
function catchUpsSuffice(last: RoundSize, pauses: number, stopPages: number): boolean {
  if (last.changedAfter === undefined || !last.bytesOnWire) return false;
  // The guest that changed most writes most during its catch-up (without the figure: all of it).
  const changed = last.mostChangedInOneGuest ?? last.changedAfter;
  const perPage = PAGE_SIZE / last.bytesOnWire; // a page's share of the round's time
  const duringOne = changed * changed * perPage;
  const lastCatchUp = changed + (pauses - 1) * duringOne;
  return changed * lastCatchUp * perPage <= stopPages;
}

/**
 * How far to slow the guests down while the rounds stall (auto-converge),
 * as shares of their CPU time held back: QEMU's `cpu-throttle-initial`,
 * `cpu-throttle-increment` and `max-cpu-throttle`, with its defaults for
 * the first two.
 */
export interface ThrottleSteps {
  /** The most, from 0 (never slow the guests) to 0.99. */
  max: number;
  /** The first throttle. Default 0.2. */
  initial?: number;
  /** Added each time the rounds stall again. Default 0.1. */
  step?: number;
}

/** The steps with QEMU's defaults for those not given: 20% first, then 10% more each time. */
export function withDefaultSteps(steps: ThrottleSteps): Required<ThrottleSteps> {
  const { max, initial = 0.2, step = 0.1 } = steps;
  return { max, initial, step };
}

/**
 * The live rounds every throttle step may need, beyond the usual limit: a
 * default round limit grows by this much when the guests may be slowed,
 * so that the rounds can reach the most throttle before they give up
 * (each step follows a round that stalled).
 */
export function throttleRounds(steps: ThrottleSteps): number {
  checkThrottleSteps(steps);
  let count = 0;
  for (let level = 0; (level = nextThrottle(level, steps) ?? -1) >= 0;) count++;
  return count;
}

/**
 * Refuses steps that would never reach their most: each share from 0.01
 * to 0.99 (a step rounded to a percent, as nextThrottle rounds, must move).
 *
 * @throws RangeError naming the share out of range
 */
export function checkThrottleSteps(steps: ThrottleSteps): void {
  const { max, initial, step } = withDefaultSteps(steps);
  for (const [name, share] of [["max", max], ["initial", initial], ["step", step]] as const) {
    if (!(share >= 0.01 && share <= 0.99)) {
      throw new RangeError(`Cannot throttle by ${name} ${share}: a share from 0.01 to 0.99`);
    }
  }
}

/**
 * The throttle after `current` once the rounds stalled: the first step,
 * the next, or the most; undefined when already there (or `max` is 0).
 */
export function nextThrottle(current: number, steps: ThrottleSteps): number | undefined {
  const { max, initial, step } = withDefaultSteps(steps);
  if (current >= max) return undefined;
  const next = current === 0 ? initial : current + step;
  // Rounded to a percent: 0.2 + 0.1 is 0.30000000000000004.
  return Math.min(max, Math.round(next * 100) / 100);
}
