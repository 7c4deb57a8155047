/**
 * The scan buffers a sender's rounds read guests into, and the threads of
 * its final round.
 *
 * @module
 */
import { CHUNK_PAGES, PARALLEL_CHUNK_PAGES } from "../scan/scan_chunks.ts";
import { type ScanBuffers, scanBuffers, startScanThreads } from "../native/content_index.ts";

/** A sender's scan buffers: 1 MiB for first reads on one thread, 16 MiB for the rest. */
export class RoundBuffers {
  /** Threads of a final round's page work: with the gang paused the cores are free. */
  readonly finalThreads: number;
  readonly #small = scanBuffers(CHUNK_PAGES);
  #large: ScanBuffers | undefined;

  constructor(finalThreads: number | undefined) {
    this.finalThreads = Math.max(1, finalThreads ?? navigator.hardwareConcurrency ?? 1);
  }

  /**
   * The buffers of one guest's read on `threads` threads. A first read on
   * one thread goes 1 MiB a call (each page copied, then planned while in
   * the cache), any other read 16 MiB (a later read copies few pages, and
   * 256 calls a guest cost 5 ms more: docs/lab-results/runs/ab-20).
   */
  of(threads: number, firstRead: boolean): ScanBuffers {
    return threads > 1 || !firstRead ? this.large() : this.#small;
  }

  /**
   * The 16 MiB buffers, made at once if missing, and the final round's
   * helper threads: to be made before any guest is paused, as fresh memory
   * and new threads are slow on a VM (the first guest's downtime grew by
   * 60-90 ms when they were made while it was paused:
   * docs/lab-results/runs/ab-15). A sender makes them while it waits for
   * the target to acknowledge its first round; a one pass as it starts.
   */
  large(): ScanBuffers {
    if (!this.#large) {
      this.#large = scanBuffers(PARALLEL_CHUNK_PAGES);
      this.#large.buf.fill(0); // its pages mapped now, on their first write
      if (this.finalThreads > 1) startScanThreads(this.finalThreads);
    }
    return this.#large;
  }
}
