/**
 * Durations as the lab reports them. Internal to src/lab.
 *
 * @module
 */

/** Seconds between two `performance.now()` readings, rounded to the millisecond. */
export function secondsBetween(from: number, to: number): number {
  return Math.round(to - from) / 1000;
}
