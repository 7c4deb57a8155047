/**
 * The source side of a gang migration, as steps a script calls one by one:
 * connect (handshake), prepare (the preparation scan), round (one live
 * pre-copy round; the last one with the guests paused) and verify.
 *
 * @module
 */
import { CHUNK_PAGES, scanChunks } from "../scan/scan_chunks.ts";
import type { Gang } from "../scan/gang.ts";
import { scanBuffers } from "../native/content_index.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import {
  type ChunkPlan,
  emptyCounts,
  Op,
  type RoundCounts,
  type RoundPages,
  RoundPlanner,
} from "../plan/round_planner.ts";
import { type DirtyTracker, rescanEverything } from "../plan/dirty_tracking.ts";
import { type Preparation, prepareGang } from "../plan/preparation.ts";
import { compress, compressBound } from "../native/compression.ts";
import {
  type CompressionMode,
  CompressionPolicy,
  type CompressionReport,
} from "./compression_policy.ts";
import { TargetAnswers, TargetError } from "./target_answers.ts";
import { type ByteStream, FrameReader, FrameWriter } from "./frame_io.ts";
import { Pacer } from "./pacer.ts";
import { checkSizesUnchanged } from "./final_checks.ts";
import { encodeRoundEnd, FrameType, PROTOCOL_VERSION } from "./protocol.ts";
import { encodeDone, guestDigest } from "./digests.ts";
import { encodeHello } from "./hello_frame.ts";
import {
  pagesFrameBytes,
  pairsFrameBytes,
  writePagesFrame,
  writePagesHead,
  writePairsFrame,
} from "./page_frames.ts";
import { errorMessage } from "../_errors.ts";

export { TargetError };

/** Pages per PAGES frame: a frame must fit in one write (1 MiB). */
const PAGES_PER_FRAME = 128;

/** Largest answer of a target: an ERROR of 4000 characters in UTF-8. */
const ANSWER_BODY_BYTES = 16384;

/** Options of {@linkcode GangSender.connect}. */
export interface SenderOptions {
  /** Cap on bytes per second written to the target (like QEMU's max-bandwidth). */
  maxBandwidth?: number;
  /** Shared secret the target requires, if any. */
  token?: string;
  /** Longest wait for an answer of the target (handshake, end of round, verification). Default 120 s. */
  answerTimeoutMs?: number;
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
   * Threads for the page work of the preparation scan (zero checks,
   * hashes). Default 1: the guests run meanwhile and need their cores.
   */
  scanThreads?: number;
  /**
   * Chooses the pages rounds after the first re-read (soft-dirty bits where
   * the kernel has them), when the sender prepares itself
   * ({@linkcode GangSender.prepare}); a preparation given to
   * {@linkcode GangSender.usePreparation} brings its own. Default: every
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
  /** From the first page scanned to the target's acknowledgement. */
  seconds: number;
  /** Bytes written to the target in this round, headers included. */
  bytesOnWire: number;
  /** Pages handled, by kind (round 1: every page; later: the pages that changed). */
  pages: RoundPages;
  /** Of the sentIdentical pages, those that were written since the preparation scan. */
  rematched: number;
}

/**
 * Sends a gang's RAM to a target that runs `receive`. Each distinct page
 * content crosses the wire once for the whole gang; every other page with
 * that content is a reference.
 *
 * Requires `--allow-ffi` (and `--allow-net` for the connection).
 *
 * @example
 * ```ts
 * import { GangSender } from "./sender.ts";
 * import { randomSeed } from "./seed.ts";
 * import { Gang, type GuestSpec } from "../scan/gang.ts";
 *
 * declare const guests: GuestSpec[];
 * declare function pauseMyGuests(): Promise<void>;
 * using gang = Gang.open(guests, { seed: randomSeed() });
 * const conn = await Deno.connect({ hostname: "10.0.0.2", port: 7000 });
 * await using sender = await GangSender.connect(gang, conn);
 * await sender.prepare();
 * await sender.round();                  // live: the guests keep running
 * await pauseMyGuests();
 * await sender.round({ final: true });   // the rest, with the guests paused
 * await sender.verify();
 * ```
 */
export class GangSender implements AsyncDisposable {
  readonly #gang: Gang;
  readonly #conn: ByteStream & { close(): void };
  readonly #writer: FrameWriter;
  readonly #answers: TargetAnswers;
  readonly #planner: RoundPlanner;
  readonly #options: SenderOptions;
  #tracker: DirtyTracker;
  readonly #compression: CompressionPolicy;
  readonly #rawScratch = new Uint8Array(PAGES_PER_FRAME * PAGE_SIZE);
  #zstdScratch: Uint8Array;
  readonly #out = scanBuffers(CHUNK_PAGES);
  #roundsStarted = 0;
  #prepared = false;
  #sentInOnePass = false;
  #closed = false;
  /** Rounds done so far. */
  readonly rounds: RoundReport[] = [];
  /** What compression did so far. */
  get compression(): CompressionReport {
    return this.#compression.report;
  }

  /** How rounds after the first choose the pages they re-read. */
  get dirtyTracking(): DirtyTracker["kind"] {
    return this.#tracker.kind;
  }
  /** Bytes of the frames that carried each guest's pages (rounds only), by guest number. */
  readonly guestBytesOnWire: number[];

  private constructor(gang: Gang, conn: ByteStream & { close(): void }, options: SenderOptions) {
    this.#gang = gang;
    this.#conn = conn;
    this.#options = options;
    this.#tracker = options.dirtyTracker ?? rescanEverything;
    const pacer = options.maxBandwidth ? new Pacer(options.maxBandwidth) : undefined;
    this.#answers = new TargetAnswers(new FrameReader(conn, ANSWER_BODY_BYTES));
    // Once the target has given up, no write waits any longer (for the pacer above all).
    const targetGone = new AbortController();
    this.#answers.failed.then((error) => targetGone.abort(error));
    this.#writer = new FrameWriter(conn, {
      pacer,
      stallTimeoutMs: options.stallTimeoutMs ?? 60_000,
      signal: targetGone.signal,
    });
    this.#compression = new CompressionPolicy(options.compression ?? "auto", this.#writer);
    this.#zstdScratch = new Uint8Array(compressBound(this.#rawScratch.length));
    this.#planner = new RoundPlanner(gang, CHUNK_PAGES);
    this.guestBytesOnWire = gang.guests.map(() => 0);
  }

  /**
   * Introduces the gang to the target and waits for it to accept.
   *
   * @param conn a connected stream (TCP or TLS); closed by {@linkcode close}
   * @throws TargetError with the target's reason if it refuses
   */
  static async connect(
    gang: Gang,
    conn: ByteStream & { close(): void },
    options: SenderOptions = {},
  ): Promise<GangSender> {
    const sender = new GangSender(gang, conn, options);
    try {
      void sender.#answers.run();
      await sender.#send(encodeHello({
        version: PROTOCOL_VERSION,
        pageSize: PAGE_SIZE,
        seed: gang.index.seed,
        token: options.token ?? "",
        guests: gang.guests.map((g) => ({ name: g.name, size: g.ram.size })),
      }));
      await sender.#flush();
      await sender.#answers.expect(FrameType.Welcome, sender.#answerTimeout);
      return sender;
    } catch (error) {
      sender.close();
      throw error;
    }
  }

  get #answerTimeout(): number {
    return this.#options.answerTimeoutMs ?? 120_000;
  }

  /** Bytes written to the target so far, headers included. */
  get bytesOnWire(): number {
    return this.#writer.bytesWritten;
  }

  /**
   * The preparation phase: starts dirty tracking and scans every page of
   * the gang into the content index while the guests run
   * ({@linkcode prepareGang}). Done by the first round if not called.
   */
  async prepare(): Promise<Preparation> {
    return this.usePreparation(
      await prepareGang(this.#gang, {
        dirtyTracker: this.#tracker,
        threads: this.#options.scanThreads,
      }),
    );
  }

  /**
   * Takes a preparation the caller made with {@linkcode prepareGang} (of
   * this sender's gang), before this sender existed or while it connected:
   * rounds are planned from it, and its dirty tracker chooses what rounds
   * after the first re-read.
   *
   * @throws Error if a round ran already, or the preparation is of another gang
   */
  usePreparation(preparation: Preparation): Preparation {
    if (this.#roundsStarted > 0) {
      throw new Error("Cannot use a preparation after the first round: it must come before");
    }
    this.#planner.notePreparationScan(preparation);
    this.#tracker = preparation.dirtyTracker;
    this.#prepared = true;
    return preparation;
  }

  /**
   * One pre-copy round: re-scans every page and sends what the target
   * lacks. With `final`, the caller has paused the guests: after it the
   * target holds exactly the source's RAM.
   */
  async round(options: { final?: boolean } = {}): Promise<RoundReport> {
    if (this.#sentInOnePass) throw new Error("round() after onePass(): the gang is sent already");
    if (!this.#prepared) await this.prepare();
    return await this.#runRound(options.final ?? false, false);
  }

  /**
   * The whole transfer of a gang nobody writes (guests stopped, or paused
   * already), in one pass: no preparation scan and no live rounds, which
   * would only read every page again to find nothing changed. Each page is
   * scanned, indexed and sent at once; the first page of a content carries
   * it and later ones refer to it. Then only {@linkcode verify} is left.
   *
   * @throws Error if the sender prepared or ran a round already
   */
  async onePass(): Promise<RoundReport> {
    if (this.#prepared || this.#roundsStarted > 0) {
      throw new Error("onePass() must be the sender's only step before verify()");
    }
    this.#prepared = true;
    this.#sentInOnePass = true;
    return await this.#runRound(true, true);
  }

  async #runRound(final: boolean, onePass: boolean): Promise<RoundReport> {
    const round = ++this.#roundsStarted;
    const counts = emptyCounts();
    const started = performance.now();
    const bytesBefore = this.bytesOnWire;
    const pagesTotal = this.#gang.pages;
    let pagesBefore = 0; // pages of the guests already done
    for (const guest of this.#gang.guests) {
      // Round 1 sends every page, so it reads them all, bytes included; later rounds read
      // what may have changed, and only changed pages (whose bytes the scan keeps) are sent.
      const mask = round === 1 ? undefined : this.#tracker.changed(guest.number);
      const scanning = {
        out: this.#out,
        mask,
        bytes: round === 1 ? "all" as const : "changed" as const,
      };
      for (const chunk of scanChunks(this.#gang, guest.number, scanning)) {
        const plan = this.#planner.planChunk(
          guest.number,
          chunk.first,
          chunk.count,
          this.#out,
          round,
          counts,
        );
        await this.#sendPlan(guest.number, chunk.first, plan);
        const pagesDone = pagesBefore + chunk.first + chunk.count;
        this.#options.onProgress?.({ round, pagesDone, pagesTotal, bytesOnWire: this.bytesOnWire });
      }
      pagesBefore += guest.ram.pages;
    }
    if (final) checkSizesUnchanged(this.#gang);
    await this.#send(encodeRoundEnd(round, final));
    await this.#flush();
    const acknowledged = await this.#answers.expect(FrameType.RoundDone, this.#answerTimeout);
    if (acknowledged !== round) {
      throw new TargetError(`Target acknowledged round ${acknowledged}, not ${round}`);
    }
    if (onePass) this.#planner.classifyOnePass(counts);
    const report = roundReport(round, final, started, this.bytesOnWire - bytesBefore, counts);
    this.rounds.push(report);
    return report;
  }

  /**
   * Sends the digest of every guest's RAM (from the last round's hashes)
   * and waits until the target found its copy identical.
   *
   * @returns the digests, one per guest
   * @throws TargetError if any guest's copy differs
   */
  async verify(): Promise<string[]> {
    const digests = this.#gang.guests.map((g) =>
      guestDigest(this.#gang.index.pageHashes(g.number), this.#gang.index.seed, g.ram.size)
    );
    await this.#send(encodeDone(digests));
    await this.#flush();
    const guests = await this.#answers.expect(FrameType.Verified, this.#answerTimeout);
    if (guests !== digests.length) {
      throw new TargetError(`Target verified ${guests} guests of ${digests.length}`);
    }
    return digests;
  }

  /**
   * Encodes a chunk's plan as frames: grouped by kind when the plan allows
   * (at most three frames a chunk), else in page order, merging runs.
   */
  async #sendPlan(guest: number, first: number, plan: ChunkPlan): Promise<void> {
    if (plan.groupable) {
      for (const op of [Op.Full, Op.Ref, Op.Zero]) {
        const picked = [];
        for (let i = 0; i < plan.length; i++) if (plan.ops[i] === op) picked.push(i);
        for (let at = 0; at < picked.length; at += PAGES_PER_FRAME) {
          await this.#sendOps(guest, first, plan, op, picked.slice(at, at + PAGES_PER_FRAME));
        }
      }
      return;
    }
    let start = 0;
    while (start < plan.length) {
      const op = plan.ops[start]!;
      let end = start + 1;
      while (end < plan.length && plan.ops[end] === op && end - start < PAGES_PER_FRAME) end++;
      await this.#sendOps(
        guest,
        first,
        plan,
        op,
        Array.from({ length: end - start }, (_, k) => start + k),
      );
      start = end;
    }
  }

  /** One frame for operations `which` of a plan, all of kind `op`. */
  async #sendOps(guest: number, first: number, plan: ChunkPlan, op: number, which: number[]) {
    const slots = Uint16Array.from(which, (i) => plan.slots[i]!);
    const ids = Uint32Array.from(which, (i) => plan.ids[i]!);
    const pages = Uint32Array.from(slots, (slot) => first + slot);
    let frame: Uint8Array;
    if (op === Op.Full) {
      frame = await this.#pagesFrame(guest, pages, ids, slots);
    } else if (op === Op.Ref) {
      frame = await this.#reserve(pairsFrameBytes(pages.length));
      writePairsFrame(frame, FrameType.Refs, guest, pages, ids);
    } else {
      const runs = zeroRuns(pages);
      frame = await this.#reserve(pairsFrameBytes(runs.firsts.length));
      writePairsFrame(frame, FrameType.Zeros, guest, runs.firsts, runs.counts);
    }
    this.guestBytesOnWire[guest]! += frame.length;
  }

  /** A PAGES frame, its page data compressed when the policy says so and it shrinks. */
  async #pagesFrame(
    guest: number,
    pages: Uint32Array,
    ids: Uint32Array,
    slots: Uint16Array,
  ): Promise<Uint8Array> {
    const hashes = this.#gang.index.pageHashes(guest);
    const pageHashes = BigUint64Array.from(pages, (page) => hashes[page]!);
    const n = pages.length;
    if (this.#compression.shouldCompress()) {
      const raw = this.#rawScratch.subarray(0, n * PAGE_SIZE);
      slots.forEach((slot, i) =>
        raw.set(this.#out.buf.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE), i * PAGE_SIZE)
      );
      const started = performance.now();
      const size = compress(raw, this.#zstdScratch);
      this.#compression.record(raw.length, size, performance.now() - started);
      if (size < raw.length) {
        const frame = await this.#reserve(pagesFrameBytes(n, size));
        frame.set(
          this.#zstdScratch.subarray(0, size),
          writePagesHead(frame, guest, pages, ids, pageHashes, true),
        );
        return frame;
      }
    }
    const frame = await this.#reserve(pagesFrameBytes(n));
    writePagesFrame(frame, guest, pages, ids, pageHashes, this.#out.buf, slots);
    return frame;
  }

  /** Frame room, or the target's own error if the connection broke. */
  async #reserve(bytes: number): Promise<Uint8Array> {
    try {
      return await this.#writer.reserve(bytes);
    } catch (error) {
      throw await this.#betterError(error);
    }
  }

  async #send(frame: Uint8Array): Promise<void> {
    (await this.#reserve(frame.length)).set(frame);
  }

  async #flush(): Promise<void> {
    try {
      await this.#writer.flush();
    } catch (error) {
      throw await this.#betterError(error);
    }
  }

  /**
   * A write failed (often "connection reset"): the target usually said why
   * just before it closed, so wait a moment for its words.
   */
  async #betterError(error: unknown): Promise<Error> {
    const targetError = await Promise.race([
      this.#answers.failed,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 1000)),
    ]);
    if (targetError instanceof TargetError) return targetError;
    return new TargetError(
      `Cannot send to the target: ${errorMessage(error)}`,
    );
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

function roundReport(
  round: number,
  final: boolean,
  started: number,
  bytesOnWire: number,
  counts: RoundCounts,
): RoundReport {
  const { rematched, ...pages } = counts;
  return {
    round,
    final,
    seconds: (performance.now() - started) / 1000,
    bytesOnWire,
    pages,
    rematched,
  };
}

/** Ascending pages as (first, count) runs. */
function zeroRuns(pages: Uint32Array): { firsts: Uint32Array; counts: Uint32Array } {
  const firsts: number[] = [];
  const counts: number[] = [];
  for (const page of pages) {
    const last = firsts.length - 1;
    if (last >= 0 && firsts[last]! + counts[last]! === page) counts[last]!++;
    else {
      firsts.push(page);
      counts.push(1);
    }
  }
  return { firsts: Uint32Array.from(firsts), counts: Uint32Array.from(counts) };
}
