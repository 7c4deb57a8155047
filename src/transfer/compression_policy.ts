/**
 * Whether to compress the page data of the next PAGES frame: compression
 * follows the bottleneck, as the sender's own waits show it. zstd runs on
 * other threads while the sender's thread scans and plans
 * (chunk_frames.ts), and the frames wait in order for the stream. So the
 * sender's thread waits either for the stream (the link, or a slow
 * receiver behind it, is the bottleneck), or for zstd (compression is), or
 * for neither (its own work sets the pace). Over windows of
 * {@linkcode WINDOW_MS}, "auto" moves the share of frames it compresses
 *
 *   - up while the stream holds the sender up (a Gigabit link here): fewer
 *     bytes are what makes it faster;
 *   - down while zstd holds it up, the stream does not, and the wait for
 *     zstd costs more than the link time its savings are worth (10 Gbit/s
 *     with a receiver that keeps up): compressing less then costs no time
 *     on the link;
 *   - nowhere while neither does: zstd keeps up on its own threads.
 *
 * The link time zstd saves is the bytes it took off the frames at the
 * stream's measured rate, counted {@linkcode SAVED_LINK_WEIGHT} times: that
 * rate reads up to twice the link's (the socket and the link's queue take
 * bursts; below), and a byte kept off a shared link is worth something of
 * its own. On a host whose cores are the bottleneck, as the lab's two are
 * on a Gigabit link, zstd's waits are then about what its savings are
 * worth: sending those frames raw cut no time and added 3-4% to the bytes.
 *
 * The stream comes first: a sender waiting for zstd while it also waits
 * for the stream keeps compressing. Its socket and the link's queue hold
 * megabytes, still going out while it waits for zstd: a rule that weighed
 * one wait against the other compressed a third of the frames too few on
 * a Gigabit link.
 *
 * A share set from rates measured on either side (the sender's time per
 * byte, zstd's, the link's) went wrong on a host whose guests keep its
 * cores busy, where every such rate depends on the others: the stream's
 * rate measured while the socket and the link's queue took bursts read
 * twice the link's, and a third of the frames went uncompressed on a
 * Gigabit link. Waits are what the sender pays, whatever their cause.
 *
 * None of those waits tells a fast link from a slow one when the cores
 * are the bottleneck: on the lab's two cores the stream held the sender up
 * as often at 10 Gbit/s (the target, starved of CPU, read late) as at
 * 1 Gbit/s, and its measured rate read 100-150 MB/s on both. The kernel
 * can tell: the delivery rate TCP measures while the socket is backlogged
 * (samples it marks application-limited only say "at least", and read up
 * to 4 GB/s on a Gigabit link from bursts). With the median of the last
 * {@linkcode LINK_SAMPLES} such rates {@linkcode FAST_LINK} times the raw
 * page bytes the sender makes per second at its peak, or more, the link
 * would carry the pages uncompressed faster than the sender makes them:
 * zstd only takes CPU from the rest (sending raw took round 1 of the lab's
 * 4 guests at 10 Gbit/s from 1.2-1.8 s to 0.8-0.9 s), so the share drops
 * to none at once, and similar pages are not looked for (a difference is always
 * compressed). It stays down while the link carries
 * {@linkcode FAST_LINK_UNTIL} times the sender's peak pace (which rises
 * once zstd is off its cores). The peak, not the mean: where a guest's
 * pages are references to another's, or zero, the sender makes few raw
 * bytes for a while, and against its mean pace then a Gigabit link read
 * as fast in a slow run (11.8 MB more on the link, sent raw).
 *
 * Pages of random bytes (zstd ratio near 1) gain nothing from zstd: while
 * the measured ratio is above {@linkcode NO_GAIN_RATIO}, no frame is
 * compressed. Whatever made compression not worth it may pass (contention,
 * data that did not compress): while no frame is compressed, one frame
 * every {@linkcode PROBE_INTERVAL_MS} still is, to measure again.
 *
 * @module
 */
import type { SocketSample } from "../native/connection_socket.ts";
import { DecayingRate } from "./decaying_rate.ts";

/** How PAGES data is sent: "auto" (following the bottleneck), always, or never. */
export type CompressionMode = "auto" | "zstd" | "none";

/** Where the sender's own thread waited, in seconds (each only grows). */
export interface SenderWaits {
  /** For the stream to take its writes: the link (or the receiver) set the pace. */
  link: number;
  /** For a compression to end, before its frame could be written. */
  zstd: number;
}

/** What the policy reads of the sender: its waits, and the stream's rate (for the report). */
export interface SenderGauge {
  /** Bytes per second the stream took lately; 0 until known (see FrameWriter). */
  readonly streamBytesPerSecond: number;
  /** The sender's waits so far. */
  readonly waits: Readonly<SenderWaits>;
  /** The kernel's latest measures of the connection, if it can tell (see ConnectionSocket). */
  readonly socket?: () => SocketSample | undefined;
}

/** zstd's rate on raw bytes, assumed until measured (the low end seen here). */
const ASSUMED_ZSTD_BYTES_PER_SECOND = 250e6;
/** Weight of the past in the moving averages of zstd's ratio and of the sender's pace per byte. */
const RATE_MEMORY = 0.8;
/** The share moves once per window of at least this long. */
const WINDOW_MS = 20;
/** Waiting this share of a window on one side (or more) moves the share. */
const STALL_SHARE = 0.05;
/**
 * How far the share moves per window: up from none to all in four (bytes
 * on a slow link cost most), down in twenty (a wait for zstd while the
 * socket's buffer fills at the start of a round says little).
 */
const SHARE_UP = 0.25;
const SHARE_DOWN = 0.05;
/** Link time saved by compression counts this many times against the waits for zstd (see the module). */
const SAVED_LINK_WEIGHT = 2;
/** The link counts as fast once it carries this many times the sender's raw pace (see the module)... */
const FAST_LINK = 1.5;
/** ...and until it carries fewer than this many times. */
const FAST_LINK_UNTIL = 1.2;
/** How much of the sender's peak pace is left after a window that did not reach it. */
const PEAK_MEMORY = 0.98;
/** Delivery rates of a backlogged socket kept for their median. */
const LINK_SAMPLES = 9;
/** Fewest such rates that say anything. */
const LINK_SAMPLES_NEEDED = 5;
/** Page data that zstd shrinks to more than this share of its size is sent as it is. */
export const NO_GAIN_RATIO = 0.95;
/** While no frame is compressed, one frame is still tried this often. */
export const PROBE_INTERVAL_MS = 100;

/** What the policy measured, and the share of frames it compresses from that (see the module). */
export interface CompressionEstimate {
  /** The stream's rate, bytes per second (0: not measured yet). */
  linkBytesPerSecond: number;
  /**
   * What the link carries while backlogged, as the kernel measured it
   * (median of its recent rates), bytes per second; 0 while unknown
   * (absent in reports made before it was measured).
   */
  linkCapacityBytesPerSecond?: number;
  /** Whether the link counts as fast: no frame compressed, no similar page looked for. */
  linkFast?: boolean;
  /** The sender's own pace per byte of page data, its waits aside (0: not measured yet). */
  cpuBytesPerSecond: number;
  /** zstd's rate on raw bytes. */
  zstdBytesPerSecond: number;
  /** Compressed size over raw size (0: not measured yet). */
  ratio: number;
  /** Share of frames compressed now (0 to 1). */
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
  /**
   * Of the pages in those frames, those that went as their differences from
   * similar contents (DELTAS frames, always compressed); absent in reports
   * made before them.
   */
  deltaPages?: number;
}

/** Decides frame by frame; feed it each compression's result. */
export class CompressionPolicy {
  readonly #mode: CompressionMode;
  readonly #gauge: SenderGauge;
  /** zstd's rate on raw bytes; none until measured. */
  readonly #zstdRate = new DecayingRate();
  #ratio = 0; // compressed / raw, moving average; 0 until measured
  /** Share of frames to compress while the data compresses: links are usually slower at first. */
  #share = 1;
  /** The sender's own seconds per byte of page data (its waits aside); 0 until measured. */
  #cpuSecondsPerByte = 0;
  readonly #now: () => number;
  #lastCompressed: number;
  /** The last frame's time and the sender's waits then; undefined after restart(). */
  #last: { at: number; link: number; zstd: number } | undefined;
  #window = { ms: 0, linkMs: 0, zstdMs: 0, bytes: 0, savedBytes: 0 };
  /** Frames owed to compression under a fractional share (see shouldCompress). */
  #credit = 0;
  /** The kernel's recent delivery rates of the backlogged socket, oldest first. */
  readonly #linkRates: number[] = [];
  /** The most raw page bytes per second the sender made in a window lately (see PEAK_MEMORY). */
  #peakPace = 0;
  #linkFast = false;
  readonly report: CompressionReport;

  /**
   * @param gauge the sender's waits, and the stream's rate
   * @param now a clock in milliseconds (tests pass their own)
   */
  constructor(
    mode: CompressionMode,
    gauge: SenderGauge,
    now: () => number = () => performance.now(),
  ) {
    this.#mode = mode;
    this.#gauge = gauge;
    this.#now = now;
    this.#lastCompressed = now();
    this.report = {
      mode,
      frames: 0,
      rawBytes: 0,
      compressedBytes: 0,
      deltaPages: 0,
    };
  }

  /**
   * The sender stopped making frames for a while (a round ended, an answer
   * was awaited): that gap says nothing of the bottleneck.
   */
  restart(): void {
    this.#last = undefined;
  }

  /**
   * Whether to compress the next frame, which carries `rawBytes` of page
   * data (the work that made them counts in the sender's pace).
   */
  shouldCompress(rawBytes: number): boolean {
    if (this.#mode !== "auto") return this.#mode === "zstd";
    const now = this.#now();
    this.#measure(now, rawBytes);
    this.#credit += this.#effectiveShare();
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
      linkBytesPerSecond: this.#gauge.streamBytesPerSecond,
      cpuBytesPerSecond: cpu > 0 ? 1 / cpu : 0,
      zstdBytesPerSecond: this.#zstdRate.bytesPerSecond || ASSUMED_ZSTD_BYTES_PER_SECOND,
      ratio: this.#ratio,
      linkCapacityBytesPerSecond: this.#linkCapacity(),
      linkFast: this.#linkFast,
      share: this.#mode === "auto" ? this.#effectiveShare() : this.#mode === "zstd" ? 1 : 0,
    };
  }

  /**
   * Whether pages are worth sending as their differences from similar
   * contents: not with compression off, nor while the link is fast (a
   * difference goes compressed).
   */
  get wantsDeltas(): boolean {
    return this.#mode !== "none" && !(this.#mode === "auto" && this.#linkFast);
  }

  /** The share, or none while the data does not compress. */
  #effectiveShare(): number {
    return this.#ratio > NO_GAIN_RATIO ? 0 : this.#share;
  }

  /** Adds the time since the last frame to the window; at its end, moves the share. */
  #measure(now: number, rawBytes: number): void {
    const { link, zstd } = this.#gauge.waits;
    const last = this.#last;
    this.#last = { at: now, link, zstd };
    // Until the link's rate is known, the kernel is asked at every frame, not every window: the
    // frames compressed meanwhile cost a fast link's sender the most (see sampleLink).
    if (this.#linkRates.length < LINK_SAMPLES_NEEDED) this.#sampleLink();
    if (!last) return;
    const window = this.#window;
    window.ms += now - last.at;
    window.linkMs += (link - last.link) * 1000;
    window.zstdMs += (zstd - last.zstd) * 1000;
    window.bytes += rawBytes;
    if (window.ms < WINDOW_MS || window.bytes === 0) return;
    const busyMs = Math.max(0, window.ms - window.linkMs - window.zstdMs);
    const perByte = busyMs / 1000 / window.bytes;
    this.#cpuSecondsPerByte = this.#cpuSecondsPerByte === 0
      ? perByte
      : RATE_MEMORY * this.#cpuSecondsPerByte + (1 - RATE_MEMORY) * perByte;
    const linkShare = window.linkMs / window.ms;
    const zstdShare = window.zstdMs / window.ms;
    this.#peakPace = Math.max(window.bytes / (window.ms / 1000), PEAK_MEMORY * this.#peakPace);
    // A fast link first: the waits cannot tell it (see the module).
    if (this.#judgeLink()) this.#share = 0;
    // Then the stream: while the sender waits for zstd, the socket and the link's queue may hold
    // megabytes still going out, so the link was not idle for it.
    else if (linkShare > STALL_SHARE) this.#share = Math.min(1, this.#share + SHARE_UP);
    else if (zstdShare > STALL_SHARE && window.zstdMs > this.#savedLinkMs(window.savedBytes)) {
      this.#share = Math.max(0, this.#share - SHARE_DOWN);
    }
    this.#window = { ms: 0, linkMs: 0, zstdMs: 0, bytes: 0, savedBytes: 0 };
  }

  /**
   * Takes the kernel's latest rate if it is a new one of a backlogged
   * socket. It changes with every acknowledgement, so asked at every frame
   * at first, it gives the rates to judge the link by within a window or
   * two, not five: on the lab's 10 Gbit/s link the sender compressed every
   * frame for the first 150-200 ms of round 1, waiting for zstd while a
   * core stood idle.
   */
  #sampleLink(): void {
    const sample = this.#gauge.socket?.();
    const rates = this.#linkRates;
    if (
      sample && !sample.appLimited && sample.bytesPerSecond > 0 &&
      sample.bytesPerSecond !== rates[rates.length - 1]
    ) {
      rates.push(sample.bytesPerSecond);
      if (rates.length > LINK_SAMPLES) rates.shift();
    }
  }

  /** Takes the kernel's latest rate (see sampleLink); says whether the link is fast. */
  #judgeLink(): boolean {
    this.#sampleLink();
    const capacity = this.#linkCapacity();
    const pace = this.#peakPace;
    if (capacity === 0 || pace === 0) this.#linkFast = false;
    else this.#linkFast = capacity >= (this.#linkFast ? FAST_LINK_UNTIL : FAST_LINK) * pace;
    return this.#linkFast;
  }

  /** The median of the kernel's recent rates of the backlogged socket; 0 with too few. */
  #linkCapacity(): number {
    if (this.#linkRates.length < LINK_SAMPLES_NEEDED) return 0;
    const sorted = [...this.#linkRates].sort((a, b) => a - b);
    return sorted[sorted.length >> 1]!;
  }

  /** Milliseconds of link time that saving these bytes is worth (any wait, until the stream's rate is measured: links are slow). */
  #savedLinkMs(bytes: number): number {
    const rate = this.#gauge.streamBytesPerSecond;
    return rate > 0 ? SAVED_LINK_WEIGHT * bytes / rate * 1000 : Infinity;
  }

  /**
   * Records a compression: raw page bytes in, compressed bytes out (the
   * frame goes compressed only if fewer), and the milliseconds zstd took.
   */
  record(rawBytes: number, compressedBytes: number, ms: number): void {
    if (compressedBytes < rawBytes) {
      this.#window.savedBytes += rawBytes - compressedBytes;
      this.report.frames++;
      this.report.rawBytes += rawBytes;
      this.report.compressedBytes += compressedBytes;
    }
    this.#zstdRate.add(rawBytes, Math.max(ms, 0.01) / 1000);
    // The first measure sets the ratio, so that one probe of random pages is enough to stop.
    const ratio = Math.min(compressedBytes / rawBytes, 1);
    this.#ratio = this.#ratio === 0 ? ratio : RATE_MEMORY * this.#ratio + (1 - RATE_MEMORY) * ratio;
  }
}
