/**
 * Whether to compress the page data of the next PAGES frame: compression
 * follows the bottleneck. The sender's CPU (scanning, planning, framing,
 * and zstd on what it compresses) and the stream (the link, or a slow
 * receiver behind it) work at once: the writer sends one buffer while the
 * next fills. Per raw byte of page data that must be sent,
 *
 *   - the sender's CPU costs c (its own work) plus 1/Z for the frames it
 *     compresses (Z: zstd's rate),
 *   - the stream costs 1/L (L: its rate), or r/L for a compressed frame
 *     (r: the compressed share).
 *
 * A migration goes at the slower of the two. So "auto" compresses
 *
 *   - every frame when c + 1/Z <= 1/L: even compressing everything, the
 *     CPU keeps ahead of the link (a Gigabit link here): fewest bytes at
 *     no cost in time;
 *   - no frame when c >= 1/L: the link is not full even uncompressed
 *     (10 Gbit/s, loopback): compressing would only slow the sender;
 *   - in between, the share f = (1/L - c) / (1/Z + (1 - r)/L) of frames
 *     that makes both sides equally busy: the fastest mix; unless
 *     compressing every frame is at most {@linkcode BYTES_WORTH} times
 *     slower than that, for the bytes it saves (the allowance shrinks
 *     with the saving: none for data that does not compress).
 *
 * c is measured as the sender's time between PAGES frames that was not
 * spent waiting (for the stream, or for zstd, which runs on other threads:
 * see chunk_frames.ts), per byte of page data; Z and r from each
 * compression; L is the stream's rate (FrameWriter). The model adds zstd's
 * time to the sender's as if one thread did both: on a host whose cores
 * the guests keep busy, that is what it costs. Pages of
 * random bytes give r near 1: compressing them gains nothing, and costs
 * nothing either while the CPU is ahead of the link (the next frame may
 * compress: guests mix both kinds).
 *
 * Whatever made compression not worth it may pass: zstd measured slow
 * while other processes had the CPU (8 guests on 2 cores), data that did
 * not compress. So while no frame is compressed, one frame every
 * {@linkcode PROBE_INTERVAL_MS} still is, to measure again.
 *
 * @module
 */

/** How PAGES data is sent: "auto" (when zstd outruns the link), always, or never. */
export type CompressionMode = "auto" | "zstd" | "none";

/** zstd's rate on raw bytes, assumed until measured (the low end seen here). */
const ASSUMED_ZSTD_BYTES_PER_SECOND = 250e6;
/** Weight of the past in the moving averages of zstd's rate and ratio, and of the CPU's pace. */
const RATE_MEMORY = 0.8;
/**
 * Every frame is compressed while that is at most this much slower than the
 * fastest share: bytes on a link cost whoever else uses it, and the rates
 * behind the estimate are noisy.
 */
const BYTES_WORTH = 1.25;
/** The sender's CPU time per byte is measured over windows of at least this long. */
const CPU_WINDOW_MS = 20;
/** While no frame is compressed, one frame is still tried this often. */
export const PROBE_INTERVAL_MS = 100;

/** What the policy reads of the stream (see FrameWriter) and of the sender's waits. */
export interface LinkGauge {
  /** Bytes per second the stream took lately; 0 until known. */
  readonly streamBytesPerSecond: number;
  /**
   * Seconds the sender's thread has waited, for the stream to take its
   * writes or for compressions to end, in all (it only grows).
   */
  readonly waitedSeconds: number;
}

/** What the policy measured, and the share of frames it compresses from that (see the module). */
export interface CompressionEstimate {
  /** The stream's rate, bytes per second (0: not measured yet). */
  linkBytesPerSecond: number;
  /** The sender's own pace per byte of page data, zstd and waits aside (0: not measured yet). */
  cpuBytesPerSecond: number;
  /** zstd's rate on raw bytes. */
  zstdBytesPerSecond: number;
  /** Compressed size over raw size (0: not measured yet). */
  ratio: number;
  /** Share of frames compressed at these rates (0 to 1). */
  share: number;
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
  /** The sender's own CPU seconds per byte of page data (zstd and waits aside); 0 until measured. */
  #cpuSecondsPerByte = 0;
  readonly #now: () => number;
  #lastCompressed: number;
  /** The last frame's time and the sender's waits so far; undefined after restart(). */
  #last: { at: number; waited: number } | undefined;
  #window = { ms: 0, busyMs: 0, bytes: 0 };
  /** Frames owed to compression under a fractional share (see shouldCompress). */
  #credit = 0;
  readonly report: CompressionReport;
  /** Seconds zstd worked so far, on its own threads (the frames that did not shrink included). */
  seconds = 0;

  /**
   * @param link how the stream has been taking writes lately (a FrameWriter is one)
   * @param now a clock in milliseconds (tests pass their own)
   */
  constructor(mode: CompressionMode, link: LinkGauge, now: () => number = () => performance.now()) {
    this.#mode = mode;
    this.#link = link;
    this.#now = now;
    this.#lastCompressed = now();
    this.report = { mode, frames: 0, rawBytes: 0, compressedBytes: 0 };
  }

  /**
   * The sender stopped making frames for a while (a round ended, an answer
   * was awaited): that gap is not work per byte.
   */
  restart(): void {
    this.#last = undefined;
  }

  /**
   * Whether to compress the next frame, which carries `rawBytes` of page
   * data (the work that made them counts in the sender's CPU pace).
   */
  shouldCompress(rawBytes: number): boolean {
    if (this.#mode !== "auto") return this.#mode === "zstd";
    const now = this.#now();
    this.#measureCpu(now, rawBytes);
    this.#credit += this.#share();
    if (this.#credit >= 1 - 1e-9) {
      // Never more than one frame owed: a share that drops takes effect at once.
      this.#credit = Math.min(this.#credit - 1, 1);
      this.#lastCompressed = now;
      return true;
    }
    if (now - this.#lastCompressed < PROBE_INTERVAL_MS) return false;
    this.#lastCompressed = now;
    return true;
  }

  /** What the policy measured so far, and the share of frames it compresses from it. */
  get estimate(): CompressionEstimate {
    const cpu = this.#cpuSecondsPerByte;
    return {
      linkBytesPerSecond: this.#link.streamBytesPerSecond,
      cpuBytesPerSecond: cpu > 0 ? 1 / cpu : 0,
      zstdBytesPerSecond: this.#zstdBytesPerSecond,
      ratio: this.#ratio,
      share: this.#mode === "auto" ? this.#share() : this.#mode === "zstd" ? 1 : 0,
    };
  }

  /** The share of frames to compress, from the rates measured (see the module's text). */
  #share(): number {
    const link = this.#link.streamBytesPerSecond;
    // Before the first write ends nothing is known: start compressed, as links are usually slower.
    if (link === 0) return 1;
    const linkPerByte = 1 / link;
    const zstdPerByte = 1 / this.#zstdBytesPerSecond;
    const cpu = this.#cpuSecondsPerByte;
    const ratio = this.#ratio;
    if (cpu + zstdPerByte <= linkPerByte) return 1;
    const fastest = cpu >= linkPerByte
      ? 0
      : (linkPerByte - cpu) / (zstdPerByte + (1 - ratio) * linkPerByte);
    // Seconds per byte at a share f: the slower of the CPU and the stream.
    const pace = (f: number) =>
      Math.max(cpu + f * zstdPerByte, (1 - f * (1 - ratio)) * linkPerByte);
    // Time paid for bytes saved: random pages (ratio 1) compress fast and save nothing.
    const worth = 1 + (BYTES_WORTH - 1) * (1 - ratio);
    return pace(1) <= worth * pace(fastest) ? 1 : fastest;
  }

  /** Adds the time since the last frame to the CPU window (minus the sender's waits). */
  #measureCpu(now: number, rawBytes: number): void {
    const waited = this.#link.waitedSeconds;
    const last = this.#last;
    this.#last = { at: now, waited };
    if (!last) return;
    const ms = now - last.at;
    const busyMs = ms - (waited - last.waited) * 1000;
    const window = this.#window;
    window.ms += ms;
    window.busyMs += Math.max(0, busyMs);
    window.bytes += rawBytes;
    if (window.ms < CPU_WINDOW_MS || window.bytes === 0) return;
    const perByte = window.busyMs / 1000 / window.bytes;
    this.#cpuSecondsPerByte = this.#cpuSecondsPerByte === 0
      ? perByte
      : RATE_MEMORY * this.#cpuSecondsPerByte + (1 - RATE_MEMORY) * perByte;
    this.#window = { ms: 0, busyMs: 0, bytes: 0 };
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
