/**
 * A rate measured over recent work: bytes over time, each kept as a
 * decaying sum. A mean of each piece's own rate would let the pieces that
 * took next to no time (writes the socket buffer took at once, frames of
 * nearly zero pages that zstd takes at several GB/s) outweigh those the
 * time went to: the stream read fast on a slow link, zstd 1.5-2.5 GB/s for
 * 300-400 MB/s.
 *
 * @module
 */

/** Weight of the past in both sums. */
const MEMORY = 0.8;

/** Bytes per second of recent work (the writer's stream, the sender's zstd). */
export class DecayingRate {
  #bytes = 0;
  #seconds = 0;

  /** Adds a piece of work: `bytes` in `seconds` (more than 0). */
  add(bytes: number, seconds: number): void {
    this.#bytes = MEMORY * this.#bytes + bytes;
    this.#seconds = MEMORY * this.#seconds + seconds;
  }

  /** Bytes per second lately; 0 until some work was added. */
  get bytesPerSecond(): number {
    return this.#seconds > 0 ? this.#bytes / this.#seconds : 0;
  }
}
