/**
 * When to stop the live rounds: pre-copy converges when the pages left to
 * send are few enough to send with the guests paused.
 *
 * @module
 */
import type { RoundPages } from "./round_planner.ts";

/** A live round must leave at most this share of the previous one's pages to be worth repeating. */
const SHRINK = 0.75;

/** Options of {@linkcode shouldStopLiveRounds}. */
export interface ConvergenceOptions {
  /** Most rounds in all, the final (paused) one included. Default 10. */
  maxRounds?: number;
  /**
   * Stop once a live round handled at most this many pages, or at most this
   * many are estimated changed after it (`RoundSize.changedAfter`).
   * Default 2048 (8 MiB).
   */
  stopPages?: number;
}

/** Pages a round handled (sent in full, referenced or zeroed). */
export interface RoundSize {
  /** The round's number, from 1. */
  round: number;
  /** Pages it handled. */
  pagesSent: number;
  /** An estimate, made right after it, of the pages the next round would find changed. */
  changedAfter?: number;
}

/**
 * The size of a round for {@linkcode shouldStopLiveRounds}: the pages it
 * put on the wire in any form (zero pages of round 1 cost nothing).
 */
export function roundSize(
  report: { round: number; pages: RoundPages; changedAfter?: { pages: number } },
): RoundSize {
  const p = report.pages;
  const zeros = report.round === 1 ? 0 : p.zero;
  const pagesSent = p.unique + p.dirtiedIdentical + p.unsentIdentical + p.sentIdentical + zeros;
  return { round: report.round, pagesSent, changedAfter: report.changedAfter?.pages };
}

/**
 * Whether the next round should be the final one: the last live round was
 * small enough, or what changed since it is estimated to be (round 1
 * sends every page, so unless the gang is that small only the estimate
 * can end the rounds after it),
 * the round limit is reached, or the rounds stopped shrinking (the guests
 * write as fast as we send: more rounds would not make the final one
 * smaller).
 */
export function shouldStopLiveRounds(
  history: readonly RoundSize[],
  options: ConvergenceOptions = {},
): boolean {
  const maxRounds = options.maxRounds ?? 10;
  const stopPages = options.stopPages ?? 2048;
  const last = history.at(-1);
  if (!last) return maxRounds <= 1;
  if (history.length + 1 >= maxRounds) return true;
  if (last.pagesSent <= stopPages) return true;
  if (last.changedAfter !== undefined && last.changedAfter <= stopPages) return true;
  const before = history.at(-2);
  // Round 1 sends everything: only compare later rounds with one another. Without soft-dirty
  // bits every round re-reads all of the gang's RAM, so a round that did not shrink the next
  // one by a quarter is not worth another.
  return !!(before && before.round > 1 && last.pagesSent >= SHRINK * before.pagesSent);
}
