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
 * Pages of random bytes (encrypted or compressed data in a guest) gain
 * nothing and cost a copy and zstd's look at them. While the sender mostly
 * waits for the link that CPU is spare, and trying every frame finds each
 * compressible one among them (guests mix both kinds: skipping frames
 * after incompressible ones cost the lab a third more bytes). While the
 * sender's CPU sets the pace, and compression does not shrink the data,
 * it is not worth it.
 *
 * Whatever made compression not worth it may pass: zstd measured slow
 * while other processes had the CPU (8 guests on 2 cores), data that did
 * not compress. So while it is not worth it, one frame every
 * {@linkcode PROBE_INTERVAL_MS} is still compressed, to measure again.
 *
 * @module
 */

/** How PAGES data is sent: "auto" (when zstd outruns the link), always, or never. */
export type CompressionMode = "auto" | "zstd" | "none";

/** zstd's rate on raw bytes, assumed until measured (the low end seen here). */
const ASSUMED_ZSTD_BYTES_PER_SECOND = 250e6;
/** zstd must outrun the link by this factor to be worth its CPU. */
const MARGIN = 1.2;
/** Weight of the past in the moving averages of zstd's rate and ratio. */
const RATE_MEMORY = 0.8;
/** The sender waits for the link at least this share of the time: its CPU is spare. */
const SPARE_CPU_WAITING = 0.5;
/** Compressed size over raw size above which compressing is not worth it. */
const WORTHLESS_RATIO = 0.9;
/** While compression is not worth it, one frame is still tried this often. */
export const PROBE_INTERVAL_MS = 100;

/** What the policy reads of the stream (see FrameWriter). */
export interface LinkGauge {
  /** Bytes per second the stream took lately; 0 until known. */
  readonly streamBytesPerSecond: number;
  /** Share of the time the sender waited for the stream lately (0 to 1). */
  readonly waitingShare: number;
}

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
  readonly #link: LinkGauge;
  #zstdBytesPerSecond = ASSUMED_ZSTD_BYTES_PER_SECOND;
  #ratio = 0; // compressed / raw, moving average; 0 until measured
  readonly #now: () => number;
  #lastProbe: number;
  readonly report: CompressionReport;
  /** Seconds spent in zstd so far (the frames that did not shrink included). */
  seconds = 0;

  /**
   * @param link how the stream has been taking writes lately (a FrameWriter is one)
   * @param now a clock in milliseconds (tests pass their own)
   */
  constructor(mode: CompressionMode, link: LinkGauge, now: () => number = () => performance.now()) {
    this.#mode = mode;
    this.#link = link;
    this.#now = now;
    this.#lastProbe = now();
    this.report = { mode, frames: 0, rawBytes: 0, compressedBytes: 0 };
  }

  /** Whether to compress the next frame. */
  shouldCompress(): boolean {
    if (this.#mode !== "auto") return this.#mode === "zstd";
    // Before the first write ends nothing is known: start compressed, as links are usually slower.
    const link = this.#link.streamBytesPerSecond;
    if (link === 0 || this.#worthIt(link)) return true;
    const now = this.#now();
    if (now - this.#lastProbe < PROBE_INTERVAL_MS) return false;
    this.#lastProbe = now;
    return true;
  }

  /** zstd outruns the link, and the data shrinks or the CPU would idle anyway. */
  #worthIt(link: number): boolean {
    return this.#zstdBytesPerSecond > MARGIN * link &&
      (this.#ratio <= WORTHLESS_RATIO || this.#link.waitingShare >= SPARE_CPU_WAITING);
  }

  /**
   * Records a compression: raw page bytes in, compressed bytes out (the
   * frame goes compressed only if fewer), and the milliseconds it took.
   */
  record(rawBytes: number, compressedBytes: number, ms: number): void {
    this.seconds += ms / 1000;
    if (compressedBytes < rawBytes) {
      this.report.frames++;
      this.report.rawBytes += rawBytes;
      this.report.compressedBytes += compressedBytes;
    }
    const rate = rawBytes / (Math.max(ms, 0.01) / 1000);
    this.#zstdBytesPerSecond = RATE_MEMORY * this.#zstdBytesPerSecond + (1 - RATE_MEMORY) * rate;
    // The first measure sets the ratio, so that one probe of random pages is enough to stop.
    const ratio = Math.min(compressedBytes / rawBytes, 1);
    this.#ratio = this.#ratio === 0 ? ratio : RATE_MEMORY * this.#ratio + (1 - RATE_MEMORY) * ratio;
  }
}
