/**
 * How many threads the scan's page work gets, chosen by measuring.
 *
 * More threads are not always faster: on a two-core host whose guests keep
 * one core busy, a second scan thread mostly waits for a core and the
 * wake-ups cost more than it saves (an outside measurement found the scan on
 * every core slower than on one, in every run). Which is faster depends on
 * what else runs at that moment, so the scan tries both and keeps measuring.
 *
 * @module
 */

/**
 * Pages of one step of a trial: 16 MiB, one chunk of the threaded setting.
 * A trial alternates the two settings step by step, so that both meet the
 * same mix of holes, zero pages and data: a guest's RAM varies so much from
 * one region to the next (a region of holes scans many times faster) that
 * two settings measured on different regions compared the regions.
 */
export const TRIAL_STEP_PAGES = 4096;

/** Steps each setting runs in a trial: 64 MiB each, some 10-20 ms of page work. */
export const TRIAL_STEPS = 4;

/** Pages the faster setting runs between two trials: 512 MiB. */
export const RUN_PAGES = 131072;

/**
 * Chooses, as the scan goes, between one thread and `most` threads. A
 * trial alternates them, {@linkcode TRIAL_STEP_PAGES} pages at a time,
 * until each ran {@linkcode TRIAL_STEPS} steps; then the faster (pages per
 * millisecond over its steps) runs {@linkcode RUN_PAGES} pages, and a new
 * trial starts (the host's load may have changed). A trial costs the
 * slower setting's share of it, a few per cent of the scan.
 * @example
 * ```ts
 * import { ThreadChoice } from "./thread_choice.ts";
 * const choice = new ThreadChoice(4);
 * const threads = choice.next();
 * // ... scan a chunk of 4096 pages on `threads` threads, in 3.2 ms ...
 * choice.record(threads, 4096, 3.2);
 * ```
 */
export class ThreadChoice {
  readonly #most: number;
  /** Pages per millisecond of each setting, from its latest trial. */
  readonly #rates = new Map<number, number>();
  /** Pages and milliseconds of each setting in the current trial. */
  readonly #trial = new Map<number, { pages: number; milliseconds: number }>();
  /** The setting of the current step or run, and the pages it did so far. */
  #threads = 1;
  #pages = 0;
  /** Steps done in the current trial, or -1 during a run. */
  #steps = 0;

  /**
   * A choice for a scan that has not started.
   * @param most the most threads to use (1: always one)
   */
  constructor(most: number) {
    if (!Number.isInteger(most) || most < 1) {
      throw new RangeError(`Cannot choose among ${most} threads: need a whole number >= 1`);
    }
    this.#most = most;
  }

  /** The thread count for the next chunk. */
  next(): number {
    return this.#threads;
  }

  /** Records how long a chunk of `pages` pages took on `threads` threads. */
  record(threads: number, pages: number, milliseconds: number): void {
    if (threads !== this.#threads || this.#most === 1) return;
    this.#pages += pages;
    if (this.#steps < 0) {
      if (this.#pages >= RUN_PAGES) this.#startTrial();
      return;
    }
    const sums = this.#trial.get(threads) ?? { pages: 0, milliseconds: 0 };
    sums.pages += pages;
    sums.milliseconds += milliseconds;
    this.#trial.set(threads, sums);
    if (this.#pages < TRIAL_STEP_PAGES) return;
    this.#pages = 0;
    if (++this.#steps < 2 * TRIAL_STEPS) {
      this.#threads = this.#other(threads);
      return;
    }
    for (const [setting, { pages, milliseconds }] of this.#trial) {
      // A trial too fast for the clock says nothing (and would divide by zero), nor does an older one.
      if (milliseconds > 0) this.#rates.set(setting, pages / milliseconds);
      else this.#rates.delete(setting);
    }
    this.#threads = this.preferred;
    this.#steps = -1;
  }

  /** The thread count measured faster so far (1 until both were measured). */
  get preferred(): number {
    const one = this.#rates.get(1);
    const most = this.#rates.get(this.#most);
    return one !== undefined && most !== undefined && most > one ? this.#most : 1;
  }

  #other(threads: number): number {
    return threads === 1 ? this.#most : 1;
  }

  #startTrial(): void {
    this.#trial.clear();
    this.#threads = 1;
    this.#pages = 0;
    this.#steps = 0;
  }
}
