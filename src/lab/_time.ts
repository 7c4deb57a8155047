/**
 * Durations and instants as the lab reports them. Internal to src/lab.
 *
 * @module
 */

/** Seconds between two `performance.now()` readings, rounded to the millisecond. */
export function secondsBetween(from: number, to: number): number {
  return Math.round(to - from) / 1000;
}

/**
 * Milliseconds since the epoch, finer than `Date.now()`: one clock that
 * the lab and the processes it starts on this machine share.
 */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}
