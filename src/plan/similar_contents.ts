/**
 * Similar pages: a page sent in full that differs from a content the target
 * holds in few words goes as its difference from that content (a DELTAS
 * frame, which zstd shrinks to a few dozen bytes). Kernel pages that KASLR
 * relocated by another offset in each guest of a gang are the common case:
 * a fifth of the distinct pages of a busybox gang.
 *
 * A table from page features (see `chunkFeatures`) to the last content sent
 * with that feature says which content to try. It has a fixed size and
 * forgets on collisions: a hint, never a promise. A content taken from it
 * must still be held by the target, and its bytes, read from the source
 * page the target holds it at, must still hash to it: the source page may
 * have changed since it was sent.
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import { fileDelta, PAGE_FEATURES, PAGE_WORDS } from "../native/similarity.ts";
import { NONE, type TargetContents } from "./target_contents.ts";

/**
 * Slots of the table: 2^18 (2 MiB, mostly in cache: a lookup that misses it
 * costs more than the rest of a page's planning), a quarter of a million
 * features whatever the gang's size: the newest win, and a guest's pages
 * are most like those of the guest sent just before it.
 */
const TABLE_BITS = 18;
const MASK = (1 << TABLE_BITS) - 1;
/**
 * Most words a page may differ in from its base: at half the page, a
 * difference still compressed better than the page alone in a busybox gang.
 */
export const MAX_DELTA_WORDS = PAGE_WORDS / 2;
/** Contents tried per page at most: each costs a read and a hash. */
const TRIES = 2;

/** Finds a similar content the target holds for a page (see the module). */
export class SimilarContents {
  readonly #gang: Gang;
  readonly #target: TargetContents;
  // Per slot, side by side (one cache line per lookup): the feature (0: empty) and its content id.
  readonly #slots = new Uint32Array(2 << TABLE_BITS);

  /** @param target the sender's mirror of what the target holds */
  constructor(gang: Gang, target: TargetContents) {
    this.#gang = gang;
    this.#target = target;
  }

  /** Notes content `id`'s features (`features[offset...]`, 0 = none); newer contents win slots. */
  remember(features: Uint32Array, offset: number, id: number): void {
    for (let k = 0; k < PAGE_FEATURES; k++) {
      const feature = features[offset + k]!;
      if (feature === 0) continue;
      const slot = (feature & MASK) * 2;
      this.#slots[slot] = feature;
      this.#slots[slot + 1] = id;
    }
  }

  /**
   * Turns `page` (whose features are `features[offset...]`) into its
   * difference from a similar content the target holds now, if one is
   * found.
   *
   * @returns that content (the base), or NONE with `page` untouched
   */
  makeDelta(page: Uint8Array, features: Uint32Array, offset: number): number {
    let tried = NONE;
    for (let k = 0, tries = 0; k < PAGE_FEATURES && tries < TRIES; k++) {
      const feature = features[offset + k]!;
      const slot = (feature & MASK) * 2;
      if (feature === 0 || this.#slots[slot] !== feature) continue;
      const id = this.#slots[slot + 1]!;
      if (id === tried) continue;
      tried = id;
      tries++;
      const holder = this.#target.holder(id);
      if (holder === NONE) continue;
      const at = this.#target.locate(holder);
      const differ = fileDelta(
        page,
        this.#gang.guests[at.guest]!.ram,
        at.page,
        this.#gang.index.seed,
        this.#target.hashOf(id),
        MAX_DELTA_WORDS,
      );
      if (differ <= MAX_DELTA_WORDS) return id;
    }
    return NONE;
  }
}
