/**
 * A round's plan on the wire: the frames that carry each planned chunk
 * (PAGES, REFS, ZEROS), PAGES compressed when the compression policy says
 * so and the data shrinks.
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import { compress, compressBound } from "../native/compression.ts";
import { type ChunkPlan, Op } from "../plan/round_planner.ts";
import type { CompressionPolicy } from "./compression_policy.ts";
import { FrameType } from "./protocol.ts";
import {
  pagesFrameBytes,
  pairsFrameBytes,
  writePagesFrame,
  writePagesHead,
  writePairsFrame,
} from "./page_frames.ts";

/** Pages per PAGES frame: a frame must fit in one write (1 MiB). */
const PAGES_PER_FRAME = 128;

/** Encodes planned chunks as frames, into room a writer gives. */
export class ChunkFrames {
  readonly #gang: Gang;
  readonly #compression: CompressionPolicy;
  readonly #reserve: (bytes: number) => Promise<Uint8Array>;
  readonly #rawScratch = new Uint8Array(PAGES_PER_FRAME * PAGE_SIZE);
  readonly #zstdScratch = new Uint8Array(compressBound(this.#rawScratch.length));
  /** Bytes of the frames that carried each guest's pages, by guest number. */
  readonly guestBytes: number[];

  /**
   * @param reserve room for a frame of that many bytes, in the stream to the target
   */
  constructor(
    gang: Gang,
    compression: CompressionPolicy,
    reserve: (bytes: number) => Promise<Uint8Array>,
  ) {
    this.#gang = gang;
    this.#compression = compression;
    this.#reserve = reserve;
    this.guestBytes = gang.guests.map(() => 0);
  }

  /**
   * Sends a chunk's plan as frames: grouped by kind when the plan allows
   * (at most three frames a chunk), else in page order, merging runs.
   *
   * @param data the chunk's page bytes as scanned (page i of the chunk at i * PAGE_SIZE)
   */
  async send(guest: number, first: number, plan: ChunkPlan, data: Uint8Array): Promise<void> {
    if (plan.groupable) {
      for (const op of [Op.Full, Op.Ref, Op.Zero]) {
        const picked = [];
        for (let i = 0; i < plan.length; i++) if (plan.ops[i] === op) picked.push(i);
        for (let at = 0; at < picked.length; at += PAGES_PER_FRAME) {
          await this.#sendOps(guest, first, plan, data, op, picked.slice(at, at + PAGES_PER_FRAME));
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
        data,
        op,
        Array.from({ length: end - start }, (_, k) => start + k),
      );
      start = end;
    }
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
    const slots = Uint16Array.from(which, (i) => plan.slots[i]!);
    const ids = Uint32Array.from(which, (i) => plan.ids[i]!);
    const pages = Uint32Array.from(slots, (slot) => first + slot);
    let frame: Uint8Array;
    if (op === Op.Full) {
      frame = await this.#pagesFrame(guest, pages, ids, data, slots);
    } else if (op === Op.Ref) {
      frame = await this.#reserve(pairsFrameBytes(pages.length));
      writePairsFrame(frame, FrameType.Refs, guest, pages, ids);
    } else {
      const runs = zeroRuns(pages);
      frame = await this.#reserve(pairsFrameBytes(runs.firsts.length));
      writePairsFrame(frame, FrameType.Zeros, guest, runs.firsts, runs.counts);
    }
    this.guestBytes[guest]! += frame.length;
  }

  /** A PAGES frame, its page data compressed when the policy says so and it shrinks. */
  async #pagesFrame(
    guest: number,
    pages: Uint32Array,
    ids: Uint32Array,
    data: Uint8Array,
    slots: Uint16Array,
  ): Promise<Uint8Array> {
    const hashes = this.#gang.index.pageHashes(guest);
    const pageHashes = BigUint64Array.from(pages, (page) => hashes[page]!);
    const n = pages.length;
    if (this.#compression.shouldCompress(n * PAGE_SIZE)) {
      const raw = this.#rawScratch.subarray(0, n * PAGE_SIZE);
      slots.forEach((slot, i) =>
        raw.set(data.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE), i * PAGE_SIZE)
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
    writePagesFrame(frame, guest, pages, ids, pageHashes, data, slots);
    return frame;
  }
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
