/**
 * The paper's preparation phase as a step of its own, for scripts that
 * scan ahead of a migration (`transferGang` lets round 1 do it): dirty
 * tracking starts, then every page of the gang is scanned into its
 * content index while the guests run. What it leaves (a
 * {@linkcode Preparation}) is what the rounds are planned from: which
 * pages had identical copies then, and the tracker that chooses what later
 * rounds re-read.
 *
 * @module
 */
import { ContentId } from "../native/content_index.ts";
import type { Gang } from "../scan/gang.ts";
import { scanGangInTurns, type ScanReport } from "../scan/scan_gang.ts";
import { type DirtyTracker, rescanEverything } from "./dirty_tracking.ts";

/** Options of {@linkcode prepareGang}. */
export interface PrepareOptions {
  /**
   * Chooses the pages rounds after the first re-read (soft-dirty bits where
   * the kernel has them). Default: every page, its hash telling what changed.
   */
  dirtyTracker?: DirtyTracker;
  /**
   * Threads for the page work of the scan (reads, zero checks, hashes). Default 1:
   * the guests run meanwhile and need their cores.
   */
  threads?: number;
}

/** What the preparation phase found, for planning the rounds of one migration. */
export interface Preparation {
  /** The gang it scanned. */
  readonly gang: Gang;
  /** The scan's counts: zero, unique and duplicate pages, within and across guests. */
  readonly scan: ScanReport;
  /** The tracker started just before the scan. */
  readonly dirtyTracker: DirtyTracker;
  /**
   * Per guest, one byte a page: 1 if its content had identical copies at
   * the scan (the paper's identical pages), so that rounds can tell unsent
   * identical pages from dirtied ones.
   */
  readonly identical: readonly Uint8Array[];
}

/**
 * Runs the preparation phase of a migration: starts dirty tracking, then
 * scans every page of the gang into its content index, in turns, so that
 * the rest of the process (connecting to the target) goes on meanwhile.
 * Give the result to `GangSender.usePreparation()`.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { prepareGang } from "./preparation.ts";
 * import { Gang } from "../scan/gang.ts";
 *
 * using gang = Gang.open([{ name: "vm1", path: "/dev/shm/vm1" }]);
 * const preparation = await prepareGang(gang);
 * console.log(`${preparation.scan.totals.unique} distinct contents`);
 * ```
 */
export async function prepareGang(gang: Gang, options: PrepareOptions = {}): Promise<Preparation> {
  const dirtyTracker = options.dirtyTracker ?? rescanEverything;
  dirtyTracker.start();
  const scan = await scanGangInTurns(gang, { threads: options.threads ?? 1 });
  const identical = identicalPages(gang);
  return { gang, scan, dirtyTracker, identical };
}

/**
 * Per guest, one byte a page: 1 if its content (as the gang's index holds
 * it now) is on more than one page of the gang: the paper's identical pages.
 *
 * @param copies {@linkcode contentCopies} of the gang now, if the caller has them already
 */
export function identicalPages(gang: Gang, copies = contentCopies(gang)): Uint8Array[] {
  return gang.guests.map((guest) => {
    const pageContents = gang.index.pageContents(guest.number);
    const pages = new Uint8Array(pageContents.length);
    for (let p = 0; p < pageContents.length; p++) {
      const c = pageContents[p]!;
      if (c < ContentId.Zero && copies[c]! > 1) pages[p] = 1;
    }
    return pages;
  });
}

/** Pages of the gang holding each content of its index now (zero pages not counted). */
export function contentCopies(gang: Gang): Uint32Array {
  const copies = new Uint32Array(gang.index.contents);
  for (const guest of gang.guests) {
    const pageContents = gang.index.pageContents(guest.number);
    for (let p = 0; p < pageContents.length; p++) {
      const c = pageContents[p]!;
      if (c < ContentId.Zero) copies[c]!++;
    }
  }
  return copies;
}
