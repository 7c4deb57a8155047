/**
 * What the target holds: the content id of every target page, and for
 * every content, the pages holding it.
 *
 * The receiver keeps one to resolve references; the sender keeps an
 * identical mirror, updated in the same order as the frames it sends, so
 * that it never refers to a content the target no longer holds. That is
 * what makes a reference safe when the page that first carried its content
 * is overwritten in a later round: the content moves on to another page
 * that holds it, and once no page does, the sender sends it again in full.
 *
 * Memory: 13 bytes per page (content id, two chain links, whether its guest
 * is retired) and 12 bytes per content (its first holder and its hash).
 *
 * @module
 */

/** A page or content that is not there. */
export const NONE = 0xffffffff;
/** The content id of a zero page (never stored as a content). */
export const ZERO = 0xfffffffe;

/**
 * Contents a gang may register, per page of the gang. Round 1 registers
 * one per distinct content, a later round one per page sent in full: a
 * sender stops its live rounds while the next one and the final round
 * could need more (see `GangSender.contentRoom`), and a receiver refuses a
 * sender that registers more, which would otherwise grow its tables
 * without bound by overwriting one page again and again (some 12 bytes
 * of table per 4 bytes on the wire).
 */
export const MAX_CONTENTS_PER_PAGE = 8;

/** Target pages of a gang, numbered across guests, and the contents they hold. */
export class TargetContents {
  /** First global page number of each guest. */
  readonly bases: readonly number[];
  /** Pages of each guest. */
  readonly pages: readonly number[];
  #content: Uint32Array; // global page -> content id, or ZERO
  #next: Uint32Array; // global page -> next page holding the same content
  #prev: Uint32Array; // global page -> previous page holding the same content
  #holder = new Uint32Array(1024); // content id -> first page holding it, or NONE
  #hash = new BigUint64Array(1024); // content id -> its hash
  #contents = 0;
  #retired: Uint8Array; // global page -> 1 once its guest is retired
  /** Contents this gang may register (MAX_CONTENTS_PER_PAGE a page). */
  readonly maxContents: number;

  /** Starts with every page of every guest zero. */
  constructor(guestPages: readonly number[]) {
    const bases: number[] = [];
    let total = 0;
    for (const pages of guestPages) {
      bases.push(total);
      total += pages;
    }
    if (total >= ZERO) throw new RangeError(`A gang of ${total} pages is too large`);
    this.bases = bases;
    this.pages = [...guestPages];
    this.#content = new Uint32Array(total).fill(ZERO);
    this.#next = new Uint32Array(total).fill(NONE);
    this.#prev = new Uint32Array(total).fill(NONE);
    this.#retired = new Uint8Array(total);
    this.maxContents = Math.min(MAX_CONTENTS_PER_PAGE * total, NONE);
  }

  /** Contents registered so far (the next id). */
  get contents(): number {
    return this.#contents;
  }

  /** The content a global page holds (ZERO for a zero page). */
  contentAt(page: number): number {
    return this.#content[page]!;
  }

  /** A page holding the content (its first holder), or NONE when no page does. */
  holder(id: number): number {
    if (id >= this.#contents) return NONE;
    // A retired page leaves a chain when it is found at its head (see retire()).
    let first = this.#holder[id]!;
    while (first !== NONE && this.#retired[first] === 1) {
      this.#unlink(first);
      first = this.#holder[id]!;
    }
    return first;
  }

  /** The hash of a content. */
  hashOf(id: number): bigint {
    return this.#hash[id]!;
  }

  /** The content of each page of a guest (ZERO for a zero page): a view to read at once, never to change. */
  guestContents(guest: number): Uint32Array {
    const base = this.bases[guest]!;
    return this.#content.subarray(base, base + this.pages[guest]!);
  }

  /**
   * The hash of each content registered so far, by id: a view to read at
   * once (a later content may move the table), never to change.
   */
  contentHashes(): BigUint64Array {
    return this.#hash.subarray(0, this.#contents);
  }

  /** Registers the next content (its id is `contents` before the call). */
  addContent(hash: bigint): number {
    if (this.#contents >= this.maxContents) {
      throw new RangeError(`A gang may register ${this.maxContents} contents, and did`);
    }
    if (this.#contents === this.#holder.length) {
      const holder = new Uint32Array(this.#holder.length * 2);
      holder.set(this.#holder);
      this.#holder = holder;
      const hashes = new BigUint64Array(this.#hash.length * 2);
      hashes.set(this.#hash);
      this.#hash = hashes;
    }
    const id = this.#contents++;
    this.#holder[id] = NONE;
    this.#hash[id] = hash;
    return id;
  }

  /** Page now holds content id (a registered content). */
  assign(page: number, id: number): void {
    this.#unlink(page);
    this.#content[page] = id;
    const first = this.#holder[id]!;
    if (first === NONE) {
      this.#holder[id] = page;
      return;
    }
    // Join behind the first holder: the first holder changes only when it is overwritten.
    const after = this.#next[first]!;
    this.#next[first] = page;
    this.#prev[page] = first;
    this.#next[page] = after;
    if (after !== NONE) this.#prev[after] = page;
  }

  /**
   * A guest's pages stop holding their contents for the others: the guest
   * is finished (it may run at the target and change them), so no
   * reference may be resolved from them any more. Each page's content
   * stays known (for the guest's digest), but its pages must never be
   * assigned or zeroed again: both ends refuse frames for a finished guest.
   *
   * Only marked here: a retired page leaves its content's chain when
   * {@linkcode holder} finds it at the head, so that no pass over the
   * guest's pages is made at all. A guest is retired as its switch-over
   * begins, in the thread that relays its device state, and such a pass
   * (before the JIT had compiled it) took 6-21 ms of the first guest's
   * downtime; done later, it would land in the next guest's. A retired page
   * elsewhere in a chain is never returned: it is behind a page that
   * holds the content, and reaches the head only when that one leaves.
   */
  retire(guest: number): void {
    const base = this.bases[guest]!;
    this.#retired.fill(1, base, base + this.pages[guest]!);
  }

  /** Page is now zero. */
  zero(page: number): void {
    this.#unlink(page);
    this.#content[page] = ZERO;
  }

  #unlink(page: number): void {
    const id = this.#content[page]!;
    if (id === ZERO) return;
    const prev = this.#prev[page]!;
    const next = this.#next[page]!;
    if (prev === NONE) this.#holder[id] = next;
    else this.#next[prev] = next;
    if (next !== NONE) this.#prev[next] = prev;
    this.#prev[page] = NONE;
    this.#next[page] = NONE;
  }

  /** The guest of a global page and its page number in that guest. */
  locate(page: number): { guest: number; page: number } {
    let lo = 0;
    let hi = this.bases.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.bases[mid]! <= page) lo = mid;
      else hi = mid - 1;
    }
    return { guest: lo, page: page - this.bases[lo]! };
  }
}
