/**
 * A bandwidth cap in bytes per second, like QEMU's `max-bandwidth`: each
 * write waits until the link, at that rate, would have carried everything
 * written before it.
 *
 * @module
 */
import { delay } from "../_delay.ts";

/** Spaces writes so that their average rate stays at or below a cap. */
export class Pacer {
  readonly bytesPerSecond: number;
  #freeAt = 0;

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) {
      throw new RangeError(`Bandwidth cap must be positive, got ${bytesPerSecond}`);
    }
    this.bytesPerSecond = bytesPerSecond;
  }

  /**
   * Waits for the link to be free, then books `bytes` on it.
   *
   * @param signal ends the wait at once (rejecting with its reason): at a
   * low cap the wait can be long, and a peer that gave up must be heard
   */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    // An idle link earns no credit: a long pause must not allow a burst after it.
    if (this.#freeAt < now) this.#freeAt = now;
    const wait = this.#freeAt - now;
    this.#freeAt += (bytes / this.bytesPerSecond) * 1000;
    if (wait >= 1) await delay(wait, signal);
  }
}
