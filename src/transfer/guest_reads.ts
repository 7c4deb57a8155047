/**
 * Which guests of a gang the sender's rounds have read, and which it has
 * finished. A guest's first read sends every page and fills a buffer;
 * later reads are in place, in the guest's file mapping, which is filled
 * on a thread of its own after the first read (RamFile.premap) so that no
 * later round, above all no paused one, waits for the kernel's page faults.
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import type { RamFile } from "../native/ram_file.ts";
import { estimateChangedPages } from "../scan/scan_gang.ts";

/** The gang's guests as the sender's rounds left them (see the module). */
export class GuestReads {
  readonly #gang: Gang;
  /** Guests some round has read, by number. */
  readonly #read: boolean[];
  /** Guests finished alone (GangSender.finishGuest): no later round reads them. */
  readonly #finished: boolean[];
  /** Guests whose mapping is being filled after their first read, by number. */
  readonly #premapping = new Map<number, Promise<void>>();

  constructor(gang: Gang) {
    this.#gang = gang;
    this.#read = gang.guests.map(() => false);
    this.#finished = gang.guests.map(() => false);
  }

  /** Whether some round has read the guest. */
  read(guest: number): boolean {
    return this.#read[guest] === true;
  }

  /** Whether the guest is finished; false for a number not in the gang. */
  finished(guest: number): boolean {
    return this.#finished[guest] === true;
  }

  /** Whether the number is of a guest of the gang that is not finished. */
  open(guest: number): boolean {
    return this.#finished[guest] === false;
  }

  /** No later round reads the guest. */
  finish(guest: number): void {
    this.#finished[guest] = true;
  }

  /**
   * A round starts reading the guest: once its mapping is filled, if that
   * is under way (a read in place never runs while it is filled).
   *
   * @returns whether this is the guest's first read
   */
  async begin(guest: number): Promise<boolean> {
    await this.#premapping.get(guest);
    this.#premapping.delete(guest);
    const first = !this.#read[guest];
    this.#read[guest] = true;
    return first;
  }

  /**
   * The guest's first read is over and rounds will follow: its mapping is
   * filled now, on a thread of its own, while the round goes on to the
   * next guest. A failure is told where the next read awaits it.
   */
  premap(guest: number, ram: RamFile): void {
    const filling = ram.premap();
    filling.catch(() => {}); // not an unhandled rejection meanwhile
    this.#premapping.set(guest, filling);
  }

  /**
   * The pages a live round now would find changed, estimated from one page
   * in 61 of every guest not finished ({@linkcode estimateChangedPages}; a
   * guest no round has read counts whole).
   *
   * @param only the guest to estimate alone
   */
  estimateChanged(only?: number): number {
    let estimate = 0;
    for (const { number, ram } of this.#gang.guests) {
      if (this.#finished[number] || (only !== undefined && number !== only)) continue;
      estimate += this.#read[number] ? estimateChangedPages(this.#gang, number) : ram.pages;
    }
    return estimate;
  }
}
