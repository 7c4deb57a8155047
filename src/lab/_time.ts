/**
 * Timing helpers of the lab. Internal to src/lab.
 *
 * @module
 */

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Seconds between two `performance.now()` readings, rounded to the millisecond. */
export function secondsBetween(from: number, to: number): number {
  return Math.round(to - from) / 1000;
}
