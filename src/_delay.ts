/**
 * Waiting a while, or less when told to stop, waiting for a promise no
 * longer than a while, and letting the event loop turn during long work:
 * the one way every layer does each (polls, back-offs, the pacer, read and
 * write deadlines, frame loops). Internal to src.
 *
 * @module
 */

/**
 * The longest wait a timer takes: setTimeout counts in a signed 32-bit
 * number of milliseconds (24.8 days) and fires after 1 ms for anything
 * longer, so a loop that waits for a deadline would spin.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Throws a RangeError unless `ms` (the option `name`) is undefined or a
 * wait a timer can take: 1 to {@linkcode MAX_TIMER_MS} (0 would fail every
 * wait at once, which no caller means). For options that set timeouts,
 * checked where they are taken.
 */
export function checkTimeout(ms: number | undefined, name: string): void {
  if (ms === undefined || (ms >= 1 && ms <= MAX_TIMER_MS)) return;
  throw new RangeError(`${name} must be 1 to ${MAX_TIMER_MS} ms (24.8 days), got ${ms}`);
}

/** A wait a timer can take: longer ones are cut to {@linkcode MAX_TIMER_MS} (never a spin). */
export function timerMs(ms: number): number {
  return Math.min(Math.max(ms, 0), MAX_TIMER_MS);
}

/**
 * Resolves after `ms` milliseconds (at most {@linkcode MAX_TIMER_MS}); rejects with the signal's reason as
 * soon as `signal` aborts (at once if it has already).
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, timerMs(ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Waits for a promise, or rejects with `error()` after `timeoutMs` (never
 * when undefined; at most {@linkcode MAX_TIMER_MS}). The promise is left running: close what it waits on to
 * end it.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number | undefined,
  error: () => Error,
): Promise<T> {
  if (timeoutMs === undefined) return await promise;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), timerMs(timeoutMs));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The timeout of a loop of waits, each of which may take `ms` at most (as
 * {@linkcode withTimeout} gives one), kept with one timer for the whole
 * loop: a timer costs some 6 us, and a TLS connection reads a 16 KiB record
 * a read, so a timer a read added a third to a receiver's time on its
 * reads (256 MiB over TLS on loopback: 390-410 ms of its thread against
 * 310-340). Call {@linkcode LoopTimeout.end} when the loop ends. Each wait
 * has a promise of its own for the timer to reject: a race against one
 * promise of the whole loop left a reaction on it a wait, some 300 bytes
 * each until the loop ended (1.2 GB for a 4 MB frame trickled a byte a read).
 */
export class LoopTimeout {
  readonly #ms: number;
  readonly #error: () => Error;
  /** Rejects the wait under way, if any. */
  #rejectWait: ((error: Error) => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the current wait started. */
  #started = 0;

  /**
   * @param ms longest wait (at most {@linkcode MAX_TIMER_MS})
   * @param error what a wait that took longer rejects with
   */
  constructor(ms: number, error: () => Error) {
    this.#ms = timerMs(ms);
    this.#error = error;
  }

  /** Waits for `promise`, or rejects with the error once this wait has taken the longest wait. */
  async wait<T>(promise: Promise<T>): Promise<T> {
    this.#started = performance.now();
    this.#timer ??= setTimeout(() => this.#check(), this.#ms);
    try {
      // A promise of this wait's own, for the timer to reject: nothing is left on a long-lived one.
      return await new Promise<T>((resolve, reject) => {
        this.#rejectWait = reject;
        promise.then(resolve, reject);
      });
    } finally {
      this.#rejectWait = undefined;
    }
  }

  /** Ends the loop: its timer is cleared. */
  end(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** The timer fired: the wait under way, if any, has taken too long, or may take the rest. */
  #check(): void {
    this.#timer = undefined;
    if (!this.#rejectWait) return; // the next wait arms it again
    const left = this.#started + this.#ms - performance.now();
    if (left > 0) this.#timer = setTimeout(() => this.#check(), left);
    else this.#rejectWait(this.#error());
  }
}

/** When {@linkcode shareEventLoop} last let the event loop turn. */
let lastTurn = 0;

/**
 * Lets timers and other connections' I/O run if the event loop has not
 * been turned here for `everyMs`; else returns at once. A loop of reads
 * and writes that the socket completes at once (data already buffered,
 * room in the send buffer) resolves every await as a microtask, so the
 * event loop never turns: no timer fires (pings, deadlines) and no other
 * connection is read until the loop blocks. Under a starved CPU that
 * lasted over a minute at 24 guests, and the target took the silent
 * control connection for dead. Frame loops call this after each read and
 * write, with the default: a turn sleeps to the timers' next tick and
 * waits for the CPU again (1-6 ms on a busy 2-core host), so it is rare
 * where it costs the page work; pings and deadlines are seconds. A
 * preparation scan (`prepareGang`) turns every 20 ms: a TLS handshake with
 * the target may run meanwhile, a round trip a turn.
 */
export async function shareEventLoop(everyMs = 250): Promise<void> {
  if (performance.now() - lastTurn < everyMs) return;
  // A timer, though a 0 ms one sleeps until the timers' next millisecond tick (2.4 ms measured
  // on a busy 2-core host): an immediate or a MessageChannel turn lets timers fire but reads no
  // other connection (measured), and the target's control connection is one.
  await new Promise<void>((resolve) => setTimeout(resolve, 0));
  lastTurn = performance.now();
}
