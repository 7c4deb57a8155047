/**
 * What a script tells the sender (`GangSender`) and what it hears back: its options, the progress of a round and the report of one.
 *
 * @module
 */
import type { RoundPages } from "../plan/round_planner.ts";
import type { DirtyTracker } from "../plan/dirty_tracking.ts";
import type { CompressionEstimate, CompressionMode } from "./compression_policy.ts";
import { checkTimeout } from "../_delay.ts";
import { checkBandwidth } from "../_bandwidth.ts";
import { scanThreads } from "../native/content_index.ts";

/** What `compression` takes. */
const COMPRESSION_MODES: readonly string[] = ["auto", "zstd", "none"] satisfies CompressionMode[];

/** The longest wait for an answer of the target, with guests paused or not (see SenderOptions). */
export function answerTimeoutMs(options: SenderOptions, paused: boolean): number {
  const live = options.answerTimeoutMs ?? 120_000;
  return paused ? options.pausedAnswerTimeoutMs ?? Math.min(30_000, live) : live;
}

/**
 * Checks a sender's options, as the CLI checks its flags, before anything
 * is sent: a wrong one is a RangeError naming it, not a setting taken some
 * other way.
 */
export function checkSenderOptions(options: SenderOptions): void {
  checkTimeout(options.answerTimeoutMs, "answerTimeoutMs");
  checkTimeout(options.pausedAnswerTimeoutMs, "pausedAnswerTimeoutMs");
  checkTimeout(options.stallTimeoutMs, "stallTimeoutMs");
  if (options.maxBandwidth !== undefined) checkBandwidth(options.maxBandwidth, "maxBandwidth");
  if (options.deltas !== undefined && typeof options.deltas !== "boolean") {
    throw new RangeError(`deltas must be true or false, got ${JSON.stringify(options.deltas)}`);
  }
  if (options.compression !== undefined && !COMPRESSION_MODES.includes(options.compression)) {
    throw new RangeError(
      `compression must be one of ${COMPRESSION_MODES.join(", ")}, got ${
        JSON.stringify(options.compression)
      }`,
    );
  }
  for (const name of ["scanThreads", "finalThreads"] as const) {
    const threads = options[name];
    if (threads === undefined) continue;
    try {
      scanThreads(threads);
    } catch (error) {
      throw new RangeError(`${name}: ${(error as Error).message}`);
    }
  }
}

/** Options of `GangSender.connect()`. */
export interface SenderOptions {
  /** Cap on bytes per second written to the target (like QEMU's max-bandwidth). */
  maxBandwidth?: number;
  /** Shared secret the target requires, if any. */
  token?: string;
  /**
   * Longest wait for an answer of the target (handshake, end of a live
   * round), counted from the last bytes sent reaching it where the kernel
   * tells (on a slow link they arrive minutes after the last write; see
   * `ReceiverAnswers.expect`). Default 120 s.
   */
  answerTimeoutMs?: number;
  /**
   * Longest wait for an answer of the target while guests are paused: the
   * end of a final round (the gang's, a guest's own, or onePass()) and a
   * verification. A target that hangs then keeps the guests paused until
   * it runs out, and they are resumed. Counted, as `answerTimeoutMs` is,
   * from the last bytes sent reaching the target. Default 30 s, or
   * `answerTimeoutMs` when that is shorter.
   */
  pausedAnswerTimeoutMs?: number;
  /**
   * Longest time a write to the target may make no progress (the target
   * stopped reading, or the link stalled) before the migration fails.
   * Default 60 s.
   */
  stallTimeoutMs?: number;
  /** Called as a round advances. */
  onProgress?: (progress: RoundProgress) => void;
  /**
   * Compression of page data: "auto" (default) compresses while the link
   * is the bottleneck, "zstd" always, "none" never.
   */
  compression?: CompressionMode;
  /**
   * Whether a page that differs from a content the target holds in few
   * words goes as its difference from it, compressed (a DELTAS frame).
   * Default: unless compression is "none".
   */
  deltas?: boolean;
  /**
   * Threads for the page work of a preparation scan (`GangSender.prepare()`:
   * reads, zero checks, hashes). Default 1: the guests run meanwhile and need their
   * cores. Live rounds scan on one thread.
   */
  scanThreads?: number;
  /**
   * Threads for the page work of the final round (and of a one pass),
   * which runs while the guests are paused and need no core: it is all
   * downtime. Default: every core (`navigator.hardwareConcurrency`).
   */
  finalThreads?: number;
  /**
   * Chooses the pages rounds after the first re-read (soft-dirty bits where
   * the kernel has them), when the sender prepares itself
   * (`GangSender.prepare()`); a preparation given to
   * `GangSender.usePreparation()` brings its own. Default: every
   * page, its hash telling what changed.
   */
  dirtyTracker?: DirtyTracker;
}

/** Where a round is. */
export interface RoundProgress {
  /** The round's number, from 1. */
  round: number;
  /** Pages scanned so far in this round, over all guests. */
  pagesDone: number;
  /** Pages of the gang. */
  pagesTotal: number;
  /** Bytes written so far in the whole migration. */
  bytesOnWire: number;
}

/** What one round did. */
export interface RoundReport {
  /** The round's number, from 1. */
  round: number;
  /** True for the round run with the guests paused. */
  final: boolean;
  /** The guest this round finished alone (`GangSender.finishGuest`), if it did. */
  guest?: number;
  /** The guest this live round read alone (`GangSender.guestRound`: a catch-up before its final round), if it did. */
  caughtUp?: number;
  /** From the first page scanned to the target's acknowledgement. */
  seconds: number;
  /** Bytes written to the target in this round, headers included. */
  bytesOnWire: number;
  /**
   * Of those, the bytes of the frames that carried each guest's pages, by
   * guest number (what a report of a migration stopped midway adds up).
   */
  guestBytesOnWire: number[];
  /** Pages handled, by kind (round 1: every page; later: the pages that changed). */
  pages: RoundPages;
  /** Of the sentIdentical pages, those that were written since the preparation scan. */
  rematched: number;
  /** Of the pages sent in full, those sent as their difference from a similar content. */
  deltas: number;
  /**
   * Live rounds of `transferGang`: the pages a next round would find
   * changed, estimated right after this one (`GangSender.estimateChanged`),
   * the most of them in one guest, and the seconds the estimate took (after
   * `seconds`).
   */
  changedAfter?: { pages: number; mostInOneGuest: number; seconds: number };
  /** The share of the guests' CPU time held back during this round (`slowGuests`), if any. */
  throttle?: number;
  /** Where the round's time went. */
  time: RoundTime;
}

/**
 * Where a round's seconds went, on the sender's clock: what is left of
 * `seconds` after these is planning and framing (the sender's own work in
 * TypeScript).
 */
export interface RoundTime {
  /** Reading and hashing pages, and indexing them (the C library's scan calls). */
  scanSeconds: number;
  /** Planning what each scanned page needs (the target's mirror, in TypeScript). */
  planSeconds: number;
  /** Waiting for zstd to compress page data (it runs on other threads while this one goes on). */
  compressSeconds: number;
  /** Waiting for the stream to take the frames: the link (or the receiver) set the pace. */
  linkWaitSeconds: number;
  /**
   * From the round's last frame flushed to the target's acknowledgement:
   * the link carrying what the socket still held (up to 64 MiB, minutes on
   * a slow link), and the target applying the last frames.
   */
  receiverWaitSeconds: number;
  /**
   * What the compression policy measured by the round's end, and the share
   * it chose (absent in reports made before it was measured).
   */
  compression?: CompressionEstimate;
}
