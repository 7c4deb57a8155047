/**
 * Whether to compress the page data of the next PAGES frame. zstd costs
 * far more CPU than hashing (about 0.3-0.5 GB/s on one core here), so it
 * pays only when the link, not the CPU, is the bottleneck. In "auto" mode
 * the sender compresses from the start (a migration usually goes over a
 * link slower than zstd) and goes on while it spends a good part of its
 * time waiting for the socket; when it stops waiting (the CPU became the
 * bottleneck), it sends pages as they are until the socket is the
 * bottleneck again. Frames that do not shrink go as they are.
 *
 * @module
 */

/** How PAGES data is sent: "auto" (when the link is the bottleneck), always, or never. */
export type CompressionMode = "auto" | "zstd" | "none";

/** Share of recent time spent waiting on the socket above which auto mode compresses. */
const WAIT_SHARE = 0.3;
/** Width of the window the wait share is measured over. */
const WINDOW_MS = 100;

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

/** Decides frame by frame; feed it the writer's waiting time and each result. */
export class CompressionPolicy {
  readonly #mode: CompressionMode;
  readonly #waitMs: () => number;
  #windowStart = performance.now();
  #windowWait = 0;
  #share = 1; // until measured: assume the link is the bottleneck
  readonly report: CompressionReport;

  /** @param waitMs the writer's total time spent waiting on the socket so far */
  constructor(mode: CompressionMode, waitMs: () => number) {
    this.#mode = mode;
    this.#waitMs = waitMs;
    this.report = { mode, frames: 0, rawBytes: 0, compressedBytes: 0 };
  }

  /** Whether to compress the next frame. */
  shouldCompress(): boolean {
    if (this.#mode !== "auto") return this.#mode === "zstd";
    const now = performance.now();
    if (now - this.#windowStart >= WINDOW_MS) {
      const wait = this.#waitMs();
      this.#share = (wait - this.#windowWait) / (now - this.#windowStart);
      this.#windowStart = now;
      this.#windowWait = wait;
    }
    return this.#share > WAIT_SHARE;
  }

  /** Records an attempt: raw page bytes in, compressed bytes out (sent compressed only if fewer). */
  record(rawBytes: number, compressedBytes: number): void {
    if (compressedBytes < rawBytes) {
      this.report.frames++;
      this.report.rawBytes += rawBytes;
      this.report.compressedBytes += compressedBytes;
    }
  }
}
