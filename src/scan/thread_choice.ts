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
 * Pages a setting runs to be measured: 64 MiB, some 10-20 ms of page work,
 * long enough that one preempted time slice does not decide.
 */
export const TRIAL_PAGES = 16384;

/** Pages the faster setting runs between two trials of the other: 512 MiB. */
export const RUN_PAGES = 131072;

/**
 * Chooses, as the scan goes, between one thread and `most` threads. Each
 * setting first runs {@linkcode TRIAL_PAGES} pages; then the faster (pages
 * per millisecond) runs {@linkcode RUN_PAGES} pages, the other gets a trial
 * again (the host's load may have changed), and so on. A trial of the
 * slower setting costs a few per cent of the scan.
 *
 * @example
 * ```ts
 * import { ThreadChoice } from "./thread_choice.ts";
 *
 * const choice = new ThreadChoice(4);
 * const threads = choice.next();
 * // ... scan a chunk of 4096 pages on `threads` threads, in 3.2 ms ...
 * choice.record(threads, 4096, 3.2);
 * ```
 */
export class ThreadChoice {
  readonly #most: number;
  /** Pages per millisecond of each setting, from its latest stretch. */
  readonly #rates = new Map<number, number>();
  /** The setting of the current stretch, and how far it is. */
  #threads = 1;
  #pages = 0;
  #milliseconds = 0;
  #budget = TRIAL_PAGES;

  /**
   * A choice for a scan that has not started.
   *
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
    this.#milliseconds += milliseconds;
    if (this.#pages < this.#budget) return;
    // A stretch too fast for the clock says nothing (and would divide by zero).
    if (this.#milliseconds > 0) this.#rates.set(threads, this.#pages / this.#milliseconds);
    const unmeasured = [1, this.#most].find((t) => !this.#rates.has(t));
    if (unmeasured !== undefined) this.#start(unmeasured, TRIAL_PAGES);
    else if (this.#budget === RUN_PAGES) this.#start(this.#other(this.preferred), TRIAL_PAGES);
    else this.#start(this.preferred, RUN_PAGES);
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

  #start(threads: number, budget: number): void {
    this.#threads = threads;
    this.#budget = budget;
    this.#pages = 0;
    this.#milliseconds = 0;
  }
}
