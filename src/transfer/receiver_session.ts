/**
 * Applying a gang's frames to its target files: pages written in place
 * (rebuilt first when they come as differences from pages held here),
 * references copied from pages the target holds, zero runs punched as
 * holes, every page checked against its hash; and the target's digest of
 * each guest at the end. The receiver (receiver.ts) runs the connection
 * around it.
 *
 * @module
 */
import { hashPages, zeroPageHash } from "../native/hashing.ts";
import {
  BytesPastEndError,
  copyPages,
  PAGE_SIZE,
  type PageCopies,
  RamFile,
} from "../native/ram_file.ts";
import { undoFileDeltas } from "../native/similarity.ts";
import {
  type Frame,
  FrameFlag,
  FrameType,
  frameTypeName,
  MAX_PAGES_PER_FRAME,
  ProtocolError,
} from "./protocol.ts";
import { decodeDone, heldGuestDigest } from "./digests.ts";
import { type Hello } from "./hello_frame.ts";
import { decodeDeltas, decodePages, decodePairs, matchesDigest } from "./page_frames.ts";
import { NONE, TargetContents } from "../plan/target_contents.ts";

/** One gang being received: its files and what they hold; applies the frames of its rounds. */
export class ReceiverSession {
  readonly hello: Hello;
  readonly files: RamFile[];
  readonly target: TargetContents;
  readonly zeroHash: bigint;
  round = 0;
  /** Guests finished alone (GUEST_DONE): verified, never written or copied from again. */
  readonly finished: boolean[];
  // Per global page: the batch in which a pending write targets it (to never read a page before its write lands).
  #writtenInBatch: Uint32Array;
  /** Where compressed page data is decompressed (made at the first compressed frame). */
  #pagesScratch: Uint8Array | undefined;
  #batch = 1;

  constructor(hello: Hello, files: readonly RamFile[]) {
    this.hello = hello;
    this.files = [...files];
    this.target = new TargetContents(files.map((f) => f.pages));
    this.zeroHash = zeroPageHash(hello.seed);
    this.finished = files.map(() => false);
    this.#writtenInBatch = new Uint32Array(this.target.bases.at(-1)! + this.target.pages.at(-1)!);
  }

  /** The name of a frame's guest (checked by #file first). */
  #guestName(frame: Frame): string {
    return this.hello.guests[frame.guest]!.name;
  }

  #file(frame: Frame): RamFile {
    const file = this.files[frame.guest];
    if (!file) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame for guest ${frame.guest}, which the gang does not have`,
      );
    }
    if (this.finished[frame.guest]) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame for guest "${
          this.#guestName(frame)
        }", which is finished`,
      );
    }
    return file;
  }

  /**
   * One guest finished alone (GUEST_DONE): its digest must match what the
   * target holds; then its pages are no longer a source of references, and
   * no frame may touch it again.
   *
   * @returns the guest's name
   * @throws Error when the digest differs (the session then fails)
   */
  finishGuest(frame: Frame): string {
    this.#file(frame);
    const [expected] = decodeDone(frame.body, 1);
    const actual = this.#digest(frame.guest);
    const name = this.hello.guests[frame.guest]!.name;
    if (actual !== expected) {
      throw new Error(`Digest mismatch for guest "${name}": the copy differs from the source`);
    }
    this.finished[frame.guest] = true;
    this.target.retire(frame.guest);
    return name;
  }

  #checkPage(frame: Frame, page: number): number {
    if (page >= this.target.pages[frame.guest]!) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame points at page ${page} of guest "${
          this.hello.guests[frame.guest]!.name
        }", which has ${this.target.pages[frame.guest]} pages`,
      );
    }
    return this.target.bases[frame.guest]! + page;
  }

  /**
   * Pages in full (PAGES), or as their differences from contents the
   * target holds (DELTAS): rebuilt, hashed, checked against the frame's
   * digest of their hashes, registered as new contents, written. A frame
   * that fails a check ends the session (and its files are discarded).
   */
  applyPages(frame: Frame): void {
    const file = this.#file(frame);
    // Decompressed into one buffer for the session: a new 512 KiB one per frame kept the GC busy.
    const scratch = frame.flags & FrameFlag.Compressed
      ? this.#pagesScratch ??= new Uint8Array(MAX_PAGES_PER_FRAME * PAGE_SIZE)
      : undefined;
    const decode = frame.type === FrameType.Deltas ? decodeDeltas : decodePages;
    const { pages, ids, bases, digest, data } = decode(frame.body, frame.flags, scratch);
    const firstId = this.target.contents;
    if (firstId + pages.length > this.target.maxContents) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame brings contents past the ${this.target.maxContents} ` +
          `a gang of ${this.target.pages.reduce((a, b) => a + b, 0)} pages may register`,
      );
    }
    const targetPages = new Uint32Array(pages.length);
    for (let i = 0; i < pages.length; i++) {
      targetPages[i] = this.#checkPage(frame, pages[i]!);
      if (ids[i] !== firstId + i) {
        throw new ProtocolError(
          `${frameTypeName(frame.type)} frame brings content id ${ids[i]}, expected ${firstId + i}`,
        );
      }
    }
    if (bases) this.#undoDeltas(data, bases, firstId);
    const hashes = hashPages(data, pages.length, this.hello.seed).hashes;
    if (!matchesDigest(hashes, this.hello.seed, digest)) {
      throw new ProtocolError(
        `${frameTypeName(frame.type)} frame of ${pages.length} pages of guest "${
          this.#guestName(frame)
        }" (from page ${pages[0]}) does not match its digest: corrupted in transit`,
      );
    }
    for (let i = 0; i < pages.length; i++) {
      this.target.assign(targetPages[i]!, this.target.addContent(hashes[i]!));
    }
    refusingBytesPastEnd(this.#guestName(frame), () => file.write(pages, data));
  }

  /**
   * Turns the frame's differences back into pages, each from a page that
   * holds its base (NONE: a whole page). A base is never a content of the
   * same frame (`firstId` on), as the sender found it: its pages are not
   * written yet.
   */
  #undoDeltas(data: Uint8Array, bases: Uint32Array, firstId: number): void {
    const files: RamFile[] = [];
    const pages = new Uint32Array(bases.length);
    const slots = new Uint32Array(bases.length);
    let n = 0;
    for (let i = 0; i < bases.length; i++) {
      const base = bases[i]!;
      if (base === NONE) continue;
      if (base >= firstId) {
        throw new ProtocolError(
          `Deltas frame takes content ${base} as a base, which is not one the target held before ` +
            `it (the frame brings contents ${firstId} on)`,
        );
      }
      const holder = this.target.holder(base);
      if (holder === NONE) {
        throw new ProtocolError(
          `Deltas frame takes content ${base} as a base, which no page of the target holds`,
        );
      }
      const source = this.target.locate(holder);
      files.push(this.files[source.guest]!);
      pages[n] = source.page;
      slots[n++] = i;
    }
    const notABase = undoFileDeltas(data, {
      files,
      pages: pages.subarray(0, n),
      slots: slots.subarray(0, n),
    });
    if (notABase >= 0) {
      // Its holder is a short last page, which a sender never takes as a base.
      throw new ProtocolError(
        `Deltas frame takes content ${bases[slots[notABase]!]} as a base, which cannot be one`,
      );
    }
  }

  /** References: copied from a page holding the content, hash-checked, written. */
  applyRefs(frame: Frame): void {
    const file = this.#file(frame);
    const { a: pages, b: ids } = decodePairs(frame.body, "Refs");
    const n = pages.length;
    const copies = {
      sources: new Array<RamFile>(n),
      sourcePages: new Uint32Array(n),
      targetPages: new Uint32Array(n),
      hashes: new BigUint64Array(n),
    };
    let start = 0; // first copy of the current batch
    for (let i = 0; i < n; i++) {
      const x = this.#checkPage(frame, pages[i]!);
      const id = ids[i]!;
      const holder = this.target.holder(id);
      if (holder === NONE) {
        throw new ProtocolError(`Reference to content ${id}, which no page of the target holds`);
      }
      // A page written by this batch is read only once the batch is written.
      if (this.#writtenInBatch[holder] === this.#batch) {
        this.#copy(file, copies, start, i, this.#guestName(frame));
        start = i;
      }
      const source = this.target.locate(holder);
      copies.sources[i] = this.files[source.guest]!;
      copies.sourcePages[i] = source.page;
      copies.targetPages[i] = pages[i]!;
      copies.hashes[i] = this.target.hashOf(id);
      this.#writtenInBatch[x] = this.#batch;
      this.target.assign(x, id);
    }
    this.#copy(file, copies, start, n, this.#guestName(frame));
  }

  /** Copies entries [start, end) of a REFS frame (each checked against its hash), and starts a new batch. */
  #copy(file: RamFile, copies: PageCopies, start: number, end: number, name: string): void {
    if (end > start) {
      refusingBytesPastEnd(name, () =>
        copyPages(file, {
          sources: copies.sources.slice(start, end),
          sourcePages: copies.sourcePages.subarray(start, end),
          targetPages: copies.targetPages.subarray(start, end),
          hashes: copies.hashes.subarray(start, end),
        }, this.hello.seed));
    }
    this.#batch++;
  }

  /** Pages that became zero: holes again. */
  applyZeros(frame: Frame): void {
    const file = this.#file(frame);
    const { a: firsts, b: counts } = decodePairs(frame.body, "Zeros");
    // A sender's runs come from one frame's run of pages: bounded as a frame's pages are, or a
    // frame of a few KiB could have the receiver zero a whole guest a thousand times over.
    const pages = counts.reduce((sum, count) => sum + count, 0);
    if (pages > MAX_PAGES_PER_FRAME) {
      throw new ProtocolError(
        `Zeros frame covers ${pages} pages, over the ${MAX_PAGES_PER_FRAME} of a frame`,
      );
    }
    for (let i = 0; i < firsts.length; i++) {
      const first = firsts[i]!;
      const count = counts[i]!;
      if (count === 0) throw new ProtocolError("Zeros frame with an empty run");
      this.#checkPage(frame, first + count - 1);
      const base = this.target.bases[frame.guest]! + first;
      for (let p = 0; p < count; p++) this.target.zero(base + p);
      file.punch(first, count);
    }
  }

  /** The digest of each guest as this target holds it. */
  digests(): string[] {
    return this.files.map((_, guest) => this.#digest(guest));
  }

  #digest(guest: number): string {
    return heldGuestDigest(
      this.target,
      guest,
      this.zeroHash,
      this.hello.seed,
      this.hello.guests[guest]!.size,
    );
  }
}

/**
 * Runs a write of received pages; a page that would lose bytes past the end
 * of a short last page is the sender's error, a protocol error: a sender
 * reads zeros there.
 */
function refusingBytesPastEnd(guest: string, write: () => void): void {
  try {
    write();
  } catch (error) {
    // Named by guest: the target's paths are not the sender's business.
    if (error instanceof BytesPastEndError) {
      throw new ProtocolError(
        `A page of guest "${guest}" has bytes other than zeros past the end of its ${error.size}-byte RAM`,
      );
    }
    throw error;
  }
}
