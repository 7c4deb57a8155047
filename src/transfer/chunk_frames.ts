/**
 * A round's plan on the wire: the frames that carry each planned chunk
 * (PAGES, DELTAS, REFS, ZEROS), PAGES compressed when the compression
 * policy says so and the data shrinks, DELTAS (pages of which some are
 * differences) always: uncompressed, a difference is as large as its page.
 *
 * zstd runs on other threads (a {@linkcode CompressJob} per page buffer)
 * while this one scans and plans the next chunks: the frames go into an
 * ordered queue, and each is written to the
 * stream once every frame before it is (a reference must follow the pages
 * it names, and the target counts contents in stream order). The queue is
 * bounded: a compression in flight holds one of {@linkcode IN_FLIGHT} page
 * buffers, and at most {@linkcode QUEUED_FRAMES} frames wait.
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import { compressBound, CompressJob } from "../native/compression.ts";
import { type ChunkPlan, Op } from "../plan/round_planner.ts";
import { NONE } from "../plan/target_contents.ts";
import type { CompressionPolicy, SenderWaits } from "./compression_policy.ts";
import { FrameType } from "./protocol.ts";
import {
  gatherPages,
  type PageEntries,
  pagesFrameBytes,
  pairsFrameBytes,
  writePagesFrame,
  writePagesHead,
  writePairsFrame,
} from "./page_frames.ts";

/** Pages per PAGES frame: a frame must fit in one write (1 MiB). */
const PAGES_PER_FRAME = 128;
/**
 * Compressions running at once, each in its own buffers: a core is left
 * for the sender's own thread (on 2 cores, one compression at a time: two
 * took the sender's core from it while the guests had the other), and 4 at
 * most keep ahead of any link.
 */
const IN_FLIGHT = Math.min(4, Math.max(1, (navigator.hardwareConcurrency ?? 2) - 1));
/** Frames waiting to be written, at most: the queue may not grow while the link stalls. */
const QUEUED_FRAMES = 16;

/** The page data of one frame, copied out of the scan's buffer, room for it compressed, and the job that compresses it. */
interface PageBuffers {
  raw: Uint8Array;
  zstd: Uint8Array;
  job: CompressJob;
}

/** A frame waiting in the queue: written once `written` settles. */
interface Queued {
  written: Promise<void>;
  /** Waits for its compression, if it has one (the frame's writing takes the outcome). */
  compressed?: () => void;
}

/** Encodes planned chunks as frames, into room a writer gives. */
export class ChunkFrames {
  readonly #gang: Gang;
  readonly #compression: CompressionPolicy;
  readonly #reserve: (bytes: number) => Promise<Uint8Array>;
  readonly #waits: SenderWaits;
  readonly #free: PageBuffers[] = [];
  /** Every page buffer made (at most IN_FLIGHT), free or in use. */
  readonly #made: PageBuffers[] = [];
  #closed = false;
  readonly #queue: Queued[] = [];
  #tail: Promise<void> = Promise.resolve();
  /** Bytes of the frames that carried each guest's pages, by guest number. */
  readonly guestBytes: number[];

  /**
   * @param reserve room for a frame of that many bytes, in the stream to the target
   * @param waits where this thread's waits for the queue are added up
   */
  constructor(
    gang: Gang,
    compression: CompressionPolicy,
    reserve: (bytes: number) => Promise<Uint8Array>,
    waits: SenderWaits,
  ) {
    this.#gang = gang;
    this.#compression = compression;
    this.#reserve = reserve;
    this.#waits = waits;
    this.guestBytes = gang.guests.map(() => 0);
  }

  /**
   * Queues a chunk's plan as frames: grouped by kind when the plan allows
   * (new contents, then references, then zero runs), else in page order;
   * each frame a run of operations of one kind. `data` may be reused once
   * this returns: what is queued is copied.
   *
   * @param data the chunk's page bytes as scanned (page i of the chunk at i * PAGE_SIZE)
   */
  async send(guest: number, first: number, plan: ChunkPlan, data: Uint8Array): Promise<void> {
    // New contents (Full, Delta) keep page order among themselves, in the same frames: the target
    // counts content ids in stream order. A Ref may name a content of either, so it comes after.
    const groups: ((op: number) => boolean)[] = plan.groupable
      ? [(op) => op === Op.Full || op === Op.Delta, (op) => op === Op.Ref, (op) => op === Op.Zero]
      : [() => true];
    for (const inGroup of groups) {
      let run: number[] = [];
      for (let i = 0; i <= plan.length; i++) {
        if (i < plan.length && !inGroup(plan.ops[i]!)) continue;
        const op = run.length > 0 ? frameKind(plan.ops[run[0]!]!) : 0;
        if (i === plan.length || frameKind(plan.ops[i]!) !== op || run.length === PAGES_PER_FRAME) {
          if (run.length > 0) await this.#sendOps(guest, first, plan, data, op, run);
          run = [];
        }
        if (i < plan.length) run.push(i);
      }
    }
  }

  /** Ends the compression jobs' threads (after their runs); no frame is made after this. */
  close(): void {
    this.#closed = true;
    for (const { job } of this.#made) job.close();
  }

  /** Waits until every queued frame is in the writer; throws the first failure. */
  async drain(): Promise<void> {
    while (this.#queue.length > 0) await this.#waitOldest();
  }

  /** One frame for operations `which` of a plan, all of kind `op`. */
  async #sendOps(
    guest: number,
    first: number,
    plan: ChunkPlan,
    data: Uint8Array,
    op: number,
    which: number[],
  ): Promise<void> {
    // Plain loops: TypedArray.from with a callback, and a BigInt made of each hash, took ten times
    // as long (172 ms against 15 for the frames of 1 GiB of pages sent in full).
    const n = which.length;
    const slots = new Uint16Array(n);
    const ids = new Uint32Array(n);
    const pages = new Uint32Array(n);
    for (let k = 0; k < n; k++) {
      const i = which[k]!;
      slots[k] = plan.slots[i]!;
      ids[k] = plan.ids[i]!;
      pages[k] = first + slots[k]!;
    }
    if (op === Op.Full) {
      const hashes = new BigUint64Array(n);
      copyHashes(this.#gang.index.pageHashes(guest), pages, hashes);
      let bases: Uint32Array | undefined;
      for (let k = 0; k < n; k++) {
        if (plan.ops[which[k]!] !== Op.Delta) continue;
        bases ??= new Uint32Array(n).fill(NONE);
        bases[k] = plan.bases[which[k]!]!;
        this.#compression.report.deltaPages!++;
      }
      return await this.#pagesFrame(
        guest,
        { pages, ids, hashes, ...(bases && { bases }) },
        data,
        slots,
      );
    }
    // REFS: (page, content id) pairs; ZEROS: (first page, pages) runs.
    const [type, a, b] = op === Op.Ref
      ? [FrameType.Refs, pages, ids] as const
      : [FrameType.Zeros, ...zeroRuns(pages)] as const;
    await this.#enqueue(guest, async () => {
      const frame = await this.#reserve(pairsFrameBytes(a.length));
      writePairsFrame(frame, type, guest, a, b);
      return frame.length;
    });
  }

  /**
   * A PAGES frame, its page data compressed when the policy says so and it
   * shrinks; a DELTAS frame (entries with bases: some pages are
   * differences), compressed whatever the policy says.
   */
  async #pagesFrame(
    guest: number,
    entries: PageEntries,
    data: Uint8Array,
    slots: Uint16Array,
  ): Promise<void> {
    const n = entries.pages.length;
    const deltas = entries.bases !== undefined;
    const compress = deltas || this.#compression.shouldCompress(n * PAGE_SIZE);
    if (!compress && this.#queue.length === 0) {
      // Nothing ahead of it: written from the scan's buffer, without a copy.
      const started = performance.now();
      const frame = await this.#reserve(pagesFrameBytes(n));
      this.#waits.link += (performance.now() - started) / 1000;
      writePagesFrame(frame, guest, entries, data, slots, this.#gang.index.seed);
      this.guestBytes[guest]! += frame.length;
      return;
    }
    const buffers = await this.#takeBuffers();
    const raw = buffers.raw.subarray(0, n * PAGE_SIZE);
    try {
      gatherPages(raw, data, slots);
      if (compress) buffers.job.start(raw, buffers.zstd);
    } catch (error) {
      this.#free.push(buffers); // nothing queued uses them
      throw error;
    }
    // The compression's outcome, taken once: by the wait for the queue or by the frame's writing.
    let outcome: { size: number } | { error: unknown } | undefined;
    const compressed = () => {
      if (!outcome) {
        const started = performance.now();
        try {
          const { size, ms } = buffers.job.finish();
          this.#waits.zstd += (performance.now() - started) / 1000;
          this.#compression.record(raw.length, size, ms);
          outcome = { size };
        } catch (error) {
          outcome = { error };
        }
      }
      if ("error" in outcome) throw outcome.error;
      return outcome.size;
    };
    await this.#enqueue(guest, async () => {
      try {
        const size = compress ? compressed() : undefined;
        if (size !== undefined && size < raw.length) {
          const frame = await this.#reserve(pagesFrameBytes(n, size, deltas));
          frame.set(
            buffers.zstd.subarray(0, size),
            writePagesHead(frame, guest, entries, true, this.#gang.index.seed),
          );
          return frame.length;
        }
        // Gathered into `raw` already, in frame order.
        const frame = await this.#reserve(pagesFrameBytes(n, raw.length, deltas));
        frame.set(raw, writePagesHead(frame, guest, entries, false, this.#gang.index.seed));
        return frame.length;
      } finally {
        this.#free.push(buffers);
      }
    }, compress ? compressed : undefined);
  }

  /** Queues a frame's writing behind every frame queued before it. */
  async #enqueue(
    guest: number,
    write: () => Promise<number>,
    compressed?: () => void,
  ): Promise<void> {
    while (this.#queue.length >= QUEUED_FRAMES) await this.#waitOldest();
    const written = this.#tail.then(async () => {
      this.guestBytes[guest]! += await write();
    });
    // A failure surfaces when the frame is waited for (drain, or a full queue), not as unhandled.
    written.catch(() => {});
    this.#tail = written;
    this.#queue.push({ written, compressed });
  }

  /** Page buffers for one frame: a free pair, or the oldest queued frame's once it is written. */
  async #takeBuffers(): Promise<PageBuffers> {
    if (this.#closed) throw new Error("Cannot send page frames: the connection is closed");
    if (this.#free.length === 0 && this.#made.length < IN_FLIGHT) {
      const raw = new Uint8Array(PAGES_PER_FRAME * PAGE_SIZE);
      const made = { raw, zstd: new Uint8Array(compressBound(raw.length)), job: new CompressJob() };
      this.#made.push(made);
      return made;
    }
    while (this.#free.length === 0) await this.#waitOldest();
    return this.#free.pop()!;
  }

  /** Waits for the oldest queued frame: for its compression first, then for the stream. */
  async #waitOldest(): Promise<void> {
    const oldest = this.#queue.shift()!;
    try {
      oldest.compressed?.();
    } catch {
      // The frame's writing throws it, and its wait below.
    }
    const started = performance.now();
    const zstdBefore = this.#waits.zstd;
    await oldest.written;
    // Frames written meanwhile may have waited for their compressions: that was zstd's time.
    const zstd = this.#waits.zstd - zstdBefore;
    this.#waits.link += (performance.now() - started) / 1000 - zstd;
  }
}

/**
 * The frame an operation goes in: a whole page and a difference go in the
 * same (a DELTAS frame, when it has a difference): kept apart, the runs of
 * each in a KASLR-relocated kernel made frames of a few pages.
 */
function frameKind(op: number): number {
  return op === Op.Delta ? Op.Full : op;
}

/** Ascending pages as (first, count) runs. */
function zeroRuns(pages: Uint32Array): [firsts: Uint32Array, counts: Uint32Array] {
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
  return [Uint32Array.from(firsts), Uint32Array.from(counts)];
}

/** Copies the hashes of `pages` from a guest's page hashes, as 32-bit halves: no BigInt made. */
function copyHashes(from: BigUint64Array, pages: Uint32Array, to: BigUint64Array): void {
  const source = new Uint32Array(from.buffer, from.byteOffset, from.length * 2);
  const target = new Uint32Array(to.buffer, to.byteOffset, to.length * 2);
  for (let k = 0; k < pages.length; k++) {
    target[2 * k] = source[2 * pages[k]!]!;
    target[2 * k + 1] = source[2 * pages[k]! + 1]!;
  }
}
