/**
 * Whether to compress the page data of the next PAGES frame. Compressing
 * and sending overlap (the writer sends one buffer while the next fills),
 * so with compression pages go out at the slower of zstd's rate and the
 * link's rate divided by the ratio; without, at the link's rate. That is
 * a gain exactly when zstd compresses faster than the link carries: on a
 * Gigabit link, yes (zstd level 1 does about 0.3-0.5 GB/s on one core
 * here); over loopback, or to a receiver that cannot keep up anyway, no.
 * "auto" measures both rates and compresses when zstd is the faster.
 *
 * @module
 */

/** How PAGES data is sent: "auto" (when zstd outruns the link), always, or never. */
export type CompressionMode = "auto" | "zstd" | "none";

/** zstd's rate on raw bytes, assumed until measured (the low end seen here). */
const ASSUMED_ZSTD_BYTES_PER_SECOND = 250e6;
/** zstd must outrun the link by this factor to be worth its CPU. */
const MARGIN = 1.2;
/** Weight of the past in the moving average of zstd's rate. */
const RATE_MEMORY = 0.8;

/** What compression did over a migration. */
export interface CompressionReport {
  /** The mode asked for. */
  mode: CompressionMode;
  /** PAGES frames sent compressed. */
  frames: number;
  /** Page bytes of those frames before compression. */
  rawBytes: number;
  /** Their size on the wire. */
  compressedBytes: number;
}

/** Decides frame by frame; feed it each compression's result. */
export class CompressionPolicy {
  readonly #mode: CompressionMode;
  readonly #streamBytesPerSecond: () => number;
  #zstdBytesPerSecond = ASSUMED_ZSTD_BYTES_PER_SECOND;
  readonly report: CompressionReport;

  /** @param streamBytesPerSecond how fast the stream has been taking writes lately (0: not known yet) */
  constructor(mode: CompressionMode, streamBytesPerSecond: () => number) {
    this.#mode = mode;
    this.#streamBytesPerSecond = streamBytesPerSecond;
    this.report = { mode, frames: 0, rawBytes: 0, compressedBytes: 0 };
  }

  /** Whether to compress the next frame. */
  shouldCompress(): boolean {
    if (this.#mode !== "auto") return this.#mode === "zstd";
    // Before the first write ends nothing is known: start compressed, as links are usually slower.
    const link = this.#streamBytesPerSecond();
    return link === 0 || this.#zstdBytesPerSecond > MARGIN * link;
  }

  /**
   * Records a compression: raw page bytes in, compressed bytes out (the
   * frame goes compressed only if fewer), and the milliseconds it took.
   */
  record(rawBytes: number, compressedBytes: number, ms: number): void {
    if (compressedBytes < rawBytes) {
      this.report.frames++;
      this.report.rawBytes += rawBytes;
      this.report.compressedBytes += compressedBytes;
    }
    const rate = rawBytes / (Math.max(ms, 0.01) / 1000);
    this.#zstdBytesPerSecond = RATE_MEMORY * this.#zstdBytesPerSecond + (1 - RATE_MEMORY) * rate;
  }
}
