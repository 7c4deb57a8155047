/**
 * Planning a pre-copy round: what to do with each scanned page, and which
 * of the paper's four kinds it is.
 *
 * For every page the planner compares what the source holds now (from the
 * scan) with what the target holds (its mirror of the target's contents)
 * and picks the cheapest way to make the target right:
 *   - nothing, when the target already holds that content there;
 *   - a zero run, when the page became zero;
 *   - a reference, when the target holds that content on some page (the
 *     paper's "sent identical" pages; dirtied pages that match a content
 *     already sent are re-matched and referenced too, beyond the paper);
 *   - the page in full, under a new content id, otherwise: as its
 *     difference from a similar content the target holds when one is
 *     found (similar_contents.ts).
 *
 * @module
 */
import { ContentId, PageKind, type ScanBuffers } from "../native/content_index.ts";
import type { Gang } from "../scan/gang.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import { chunkFeatures, PAGE_FEATURES } from "../native/similarity.ts";
import { NONE, TargetContents, ZERO } from "./target_contents.ts";
import { ChunkConflicts } from "./chunk_conflicts.ts";
import { SimilarContents } from "./similar_contents.ts";
import { contentCopies, identicalPages, type Preparation } from "./preparation.ts";

/** What to send for one page (values of `ChunkPlan.ops`). */
export const Op = {
  /** The page in full, bringing a new content. */
  Full: 1,
  /** A reference to a content the target holds. */
  Ref: 2,
  /** The page became zero. */
  Zero: 3,
  /** The page in full, bringing a new content, as its difference from a similar content. */
  Delta: 4,
} as const;

/** Pages of a round by kind: the paper's four plus zero pages. */
export interface RoundPages {
  /** Zero pages: all of them in round 1, later those that became zero. */
  zero: number;
  /**
   * Sent in full: identical to no other page at the preparation scan (a
   * separate one, or round 1's reads).
   */
  unique: number;
  /** Sent in full: identical to others at the preparation scan, but written since. */
  dirtiedIdentical: number;
  /** Sent in full: identical to others, not written since, content not yet at the target. */
  unsentIdentical: number;
  /** Sent as a reference to a content the target already holds. */
  sentIdentical: number;
}

/** A round's page counts, plus how many references were re-matched dirtied pages. */
export interface RoundCounts extends RoundPages {
  /** Of the sentIdentical pages, those written since the preparation scan (re-matched). */
  rematched: number;
  /** Of the pages sent in full, those sent as their difference from a similar content. */
  deltas: number;
}

/** The plan of one scanned chunk: operations in page order. */
export interface ChunkPlan {
  /** Number of operations. */
  length: number;
  /**
   * True when the operations may be sent grouped by kind (every Full and
   * Delta, then every Ref, then every Zero, each group in page order) with
   * the same effect as in page order: no page that a Full, Delta or Zero
   * overwrites held a content that a Ref or a Delta's base of this chunk
   * names. Fewer, larger frames then.
   */
  groupable: boolean;
  /** An {@linkcode Op} per operation. */
  ops: Uint8Array;
  /** Index of the operation's page in the chunk. */
  slots: Uint16Array;
  /** Content id on the wire (Full, Delta: the new id; Ref: the referenced id). */
  ids: Uint32Array;
  /** Delta: the content the page's data is the difference from (the scan's buffer holds that difference). */
  bases: Uint32Array;
}

/** Fresh, zeroed counts. */
export function emptyCounts(): RoundCounts {
  return {
    zero: 0,
    unique: 0,
    dirtiedIdentical: 0,
    unsentIdentical: 0,
    sentIdentical: 0,
    rematched: 0,
    deltas: 0,
  };
}

/**
 * Decides, chunk by chunk, what each page of a round needs. Keeps the
 * sender's mirror of the target in step with the plan: callers must send
 * the planned operations in order, and all of them.
 */
export class RoundPlanner {
  readonly #gang: Gang;
  /** The sender's mirror of what the target holds. */
  readonly target: TargetContents;
  #wireOf = new Uint32Array(1024).fill(NONE); // index content id -> wire content id
  #identicalAtPrep: readonly Uint8Array[] = []; // per guest, per page: 1 if its content had copies
  #dirtied: Uint8Array[]; // per guest, per page: 1 once written after the preparation scan
  #pageContents: Uint32Array[]; // per guest: the index's live view of each page's content
  #pageHashes: BigUint64Array[]; // per guest: the index's live view of each page's hash
  /** Pages count as dirtied from here on: the index holds a scan (a preparation's or round 1's). */
  #prepared = false;
  /** A preparation scanned every guest before the rounds: a guest's first read can find its pages dirtied. */
  #preparedAhead = false;
  #plan: ChunkPlan;
  /** Finds similar contents for pages sent in full; undefined: every such page goes whole. */
  #similar: SimilarContents | undefined;
  #features: Uint32Array; // per page of a chunk: its features, taken before any becomes a delta
  /** Whether the chunk being planned can be grouped (see ChunkPlan.groupable), by content marks. */
  #conflicts = new ChunkConflicts();

  /**
   * @param chunkPages the most pages a chunk has
   * @param deltas whether a page may go as its difference from a similar content (a DELTAS
   * frame, which the sender must then compress)
   */
  constructor(gang: Gang, chunkPages: number, deltas = false) {
    this.#gang = gang;
    this.target = new TargetContents(gang.guests.map((g) => g.ram.pages));
    this.#similar = deltas ? new SimilarContents(gang, this.target) : undefined;
    this.#features = new Uint32Array(deltas ? chunkPages * PAGE_FEATURES : 0);
    this.#dirtied = gang.guests.map((g) => new Uint8Array(g.ram.pages));
    this.#pageContents = gang.guests.map((g) => gang.index.pageContents(g.number));
    this.#pageHashes = gang.guests.map((g) => gang.index.pageHashes(g.number));
    this.#plan = {
      length: 0,
      groupable: true,
      ops: new Uint8Array(chunkPages),
      slots: new Uint16Array(chunkPages),
      ids: new Uint32Array(chunkPages),
      bases: new Uint32Array(chunkPages),
    };
  }

  /**
   * Takes what the preparation scan found: which pages had identical copies
   * (the paper's identical pages), so that later rounds can tell unsent
   * identical pages from dirtied ones.
   *
   * @throws Error if the preparation scanned another gang
   */
  notePreparationScan(preparation: Preparation): void {
    if (preparation.gang !== this.#gang) {
      throw new Error("Cannot plan rounds from this preparation: it scanned another gang");
    }
    this.#identicalAtPrep = preparation.identical;
    this.#prepared = true;
    this.#preparedAhead = true;
  }

  /**
   * Ends the first round of a migration that had no preparation scan: that
   * round scanned every page into the index as it sent them. Which pages
   * sent in full had identical copies (the paper's unsent identical pages)
   * is known only now: each content with copies was sent in full once, so
   * that many pages of its counts move from `unique` to `unsentIdentical`.
   * Later rounds tell dirtied identical pages by the copies found now, as
   * they would by a preparation scan's.
   */
  noteFirstScan(counts: RoundCounts): void {
    const copies = contentCopies(this.#gang);
    let shared = 0;
    for (const n of copies) if (n > 1) shared++;
    counts.unique -= shared;
    counts.unsentIdentical += shared;
    this.#identicalAtPrep = identicalPages(this.#gang, copies);
    this.#prepared = true;
  }

  /**
   * A guest is finished (see `TargetContents.retire`): its target pages are
   * no longer a source of references.
   */
  retire(guest: number): void {
    this.target.retire(guest);
  }

  /** The wire id of an index content, growing the map as the index grows. */
  #wireId(content: number): number {
    if (content >= this.#wireOf.length) {
      const grown = new Uint32Array(Math.max(content + 1, this.#wireOf.length * 2)).fill(NONE);
      grown.set(this.#wireOf);
      this.#wireOf = grown;
    }
    return this.#wireOf[content]!;
  }

  /**
   * Plans the pages of a scanned chunk and updates the target mirror. A
   * page planned as a Delta has its bytes in the scan's buffer replaced by
   * its difference from its base.
   *
   * @param out the scan's buffers (kinds and ids of the chunk, and its bytes)
   * @param firstRead true when the round reads the guest for the first time: every page's bytes
   * are in the buffers, and every zero page is counted
   * @param counts this round's counts, added to
   * @param deltas whether this chunk's pages may go as differences, if the planner looks for
   * similar contents at all (a sender that compresses nothing for now says no: a difference goes
   * compressed); pages it sends whole are then not remembered as bases either
   */
  planChunk(
    guest: number,
    first: number,
    count: number,
    out: ScanBuffers,
    firstRead: boolean,
    counts: RoundCounts,
    deltas = true,
  ): ChunkPlan {
    const plan = this.#plan;
    const similar = deltas ? this.#similar : undefined;
    const target = this.target;
    const base = target.bases[guest]!;
    const dirtied = this.#dirtied[guest]!;
    const identical = this.#identicalAtPrep[guest];
    const pageContents = this.#pageContents[guest]!;
    const pageHashes = this.#pageHashes[guest]!;
    // Contents that Full, Delta and Zero operations take off pages, and that Ref operations name
    // (and Delta ones' bases): the chunk's operations can be grouped by kind unless one is both.
    const conflicts = this.#conflicts;
    conflicts.start();
    let n = 0;
    if (similar) {
      chunkFeatures(out.buf, out.kinds, count, bytesKept(firstRead), this.#features);
    }
    // A later read plans only the pages that changed: an unchanged one was planned when it last
    // changed, so its target is current. Nearly every page of a final round is unchanged, and a
    // loop over them all took 8-30 ms of the first paused guest's downtime (run cold, its branches
    // new to the JIT).
    const slots = firstRead ? undefined : changedSlots(out.kinds, count);
    const todo = slots ? slots.length : count;
    for (let s = 0; s < todo; s++) {
      const i = slots ? slots[s]! : s;
      const kind = out.kinds[i]!;
      if (kind === PageKind.Skipped) continue;
      const page = first + i;
      const x = base + page;
      // Without a preparation ahead, a guest's first read (round 1's, or a later round's for a
      // guest finished alone before it) is its first scan: nothing was written since a scan.
      if (this.#prepared && (this.#preparedAhead || !firstRead) && kind !== PageKind.Unchanged) {
        dirtied[page] = 1;
      }
      const content = pageContents[page]!;

      if (content === ContentId.Zero) {
        if (target.contentAt(x) === ZERO) {
          if (firstRead) counts.zero++;
          continue;
        }
        conflicts.overwrite(target.contentAt(x));
        target.zero(x);
        counts.zero++;
        plan.ops[n] = Op.Zero;
        plan.slots[n] = i;
        plan.ids[n++] = ZERO;
        continue;
      }

      const wire = this.#wireId(content);
      if (wire !== NONE && target.contentAt(x) === wire) continue; // the target is current
      if (wire !== NONE && target.holder(wire) !== NONE) {
        conflicts.reference(wire);
        target.assign(x, wire);
        counts.sentIdentical++;
        if (dirtied[page]) counts.rematched++;
        plan.ops[n] = Op.Ref;
        plan.slots[n] = i;
        plan.ids[n++] = wire;
        continue;
      }
      // The base is found before the page takes its new content: it may be what the page held.
      const deltaBase = similar ? this.#deltaBase(out.buf, i) : NONE;
      const id = target.addContent(pageHashes[page]!);
      this.#wireOf[content] = id;
      conflicts.overwrite(target.contentAt(x));
      target.assign(x, id);
      if (identical?.[page]) {
        if (dirtied[page]) counts.dirtiedIdentical++;
        else counts.unsentIdentical++;
      } else counts.unique++;
      if (deltaBase !== NONE) {
        conflicts.reference(deltaBase);
        counts.deltas++;
      }
      plan.ops[n] = deltaBase === NONE ? Op.Full : Op.Delta;
      plan.bases[n] = deltaBase;
      plan.slots[n] = i;
      plan.ids[n++] = id;
    }
    plan.length = n;
    plan.groupable = !conflicts.found;
    // Remembered only now: a base is always a content of an earlier chunk.
    for (let op = 0; op < n && similar; op++) {
      if (plan.ops[op] === Op.Full || plan.ops[op] === Op.Delta) {
        similar.remember(this.#features, plan.slots[op]! * PAGE_FEATURES, plan.ids[op]!);
      }
    }
    return plan;
  }

  /**
   * Turns the page in slot `slot` of the chunk's bytes into its difference
   * from a similar content the target holds, if one is found.
   *
   * @returns the base content, or NONE
   */
  #deltaBase(bytes: Uint8Array, slot: number): number {
    const page = bytes.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE);
    return this.#similar!.makeDelta(page, this.#features, slot * PAGE_FEATURES);
  }
}

/** The kinds of a page that changed since its last scan. */
const CHANGED_KINDS = Object.values(PageKind).filter((kind) =>
  kind !== PageKind.Unchanged && kind !== PageKind.Skipped
);

/** The pages of a chunk a scan found changed, in page order. */
function changedSlots(kinds: Uint8Array, count: number): number[] {
  const scanned = kinds.subarray(0, count);
  const slots: number[] = [];
  // indexOf runs natively: a loop over every page here would be the cost this avoids.
  for (const kind of CHANGED_KINDS) {
    for (let i = scanned.indexOf(kind); i !== -1; i = scanned.indexOf(kind, i + 1)) slots.push(i);
  }
  return slots.sort((a, b) => a - b);
}

/**
 * The kinds of pages whose bytes a round's scan keeps (see the sender):
 * the first read of a guest keeps every page; later ones only pages that changed.
 */
const FIRST_READ_BYTES = [PageKind.New, PageKind.Duplicate, PageKind.Unchanged];
const LATER_BYTES = [PageKind.New, PageKind.Duplicate];

function bytesKept(firstRead: boolean): readonly number[] {
  return firstRead ? FIRST_READ_BYTES : LATER_BYTES;
}
