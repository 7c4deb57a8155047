/**
 * Whether a chunk's plan may be sent grouped by kind of operation: see
 * {@linkcode ChunkConflicts}.
 *
 * @module
 */
import { NONE, ZERO } from "./target_contents.ts";

/** The last chunk stamp a mark holds. */
const MAX_STAMP = 0xffffffff;

/**
 * Whether a chunk's plan takes a content off a page that another of its
 * operations names, kept as marks per content stamped with the chunk's
 * number: with two Sets a chunk instead, an add per page, a one-pass
 * transfer of an idle-like gang on loopback took 5-20% longer (5 of 6
 * interleaved pairs, at `d921b05`).
 */
export class ChunkConflicts {
  #chunk: number;
  #overwritten = new Uint32Array(1024); // content's slot -> the last chunk that took it off a page
  #referenced = new Uint32Array(1024); // content's slot -> the last chunk that named it
  /** Whether some content of the current chunk was both. */
  found = false;

  /** @param firstStamp the stamp before the first chunk's (for tests of the stamps' wrap) */
  constructor(firstStamp = 0) {
    this.#chunk = firstStamp;
  }

  /** Starts a chunk: no content is marked in it yet. */
  start(): void {
    // Stamps are 32-bit: past the last one, the marks start again from nothing.
    if (this.#chunk === MAX_STAMP) {
      this.#overwritten.fill(0);
      this.#referenced.fill(0);
      this.#chunk = 0;
    }
    this.#chunk++;
    this.found = false;
  }

  /** A content taken off a page (NONE, no content, needs no mark). */
  overwrite(content: number): void {
    if (content === NONE) return;
    content = this.#slot(content);
    this.#overwritten[content] = this.#chunk;
    if (this.#referenced[content] === this.#chunk) this.found = true;
  }

  /** A content an operation names. */
  reference(content: number): void {
    content = this.#slot(content);
    this.#referenced[content] = this.#chunk;
    if (this.#overwritten[content] === this.#chunk) this.found = true;
  }

  /** Where a content's marks are: slot 0 for ZERO, content + 1 for the others (grown to fit). */
  #slot(content: number): number {
    const slot = content === ZERO ? 0 : content + 1;
    if (slot >= this.#overwritten.length) this.#grow(slot);
    return slot;
  }

  #grow(slot: number): void {
    const length = Math.max(slot + 1, this.#overwritten.length * 2);
    const grown = (marks: Uint32Array) => {
      const bigger = new Uint32Array(length);
      bigger.set(marks);
      return bigger;
    };
    this.#overwritten = grown(this.#overwritten);
    this.#referenced = grown(this.#referenced);
  }
}
