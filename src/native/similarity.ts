/**
 * Similar pages (ffi/similar.c): the features that pair a page with others
 * that may be similar, and the word-wise difference that carries a page
 * against a similar one.
 *
 * @module
 */
import { constants } from "node:os";
import { native } from "./library.ts";
import { PAGE_SIZE, type RamFile } from "./ram_file.ts";
import { ramHandle } from "./_handles.ts";
import { check } from "./errno.ts";

/** Features of a page (GW_PAGE_FEATURES). */
export const PAGE_FEATURES = 4;

/** Words of a page. */
export const PAGE_WORDS = PAGE_SIZE / 8;

function checkPage(page: Uint8Array, what: string): void {
  if (page.length !== PAGE_SIZE) {
    throw new RangeError(`${what} must be one page, not ${page.length} bytes`);
  }
}

/**
 * The {@linkcode PAGE_FEATURES} features of each of the first `count`
 * pages of a scanned chunk whose kind is one of `kinds` (those whose bytes
 * the scan kept), page i's at `features[i * PAGE_FEATURES]`: 0 for a
 * sampled 64-byte block that is all zero, else a hash of it; zeros for the
 * other pages. Pages that share a non-zero feature at the same place may
 * be similar. One call a chunk.
 *
 * @param pageKinds the scan's kind of each page (`ScanBuffers.kinds`)
 */
export function chunkFeatures(
  buf: Uint8Array,
  pageKinds: Uint8Array,
  count: number,
  kinds: readonly number[],
  features: Uint32Array,
): void {
  if (buf.length < count * PAGE_SIZE || pageKinds.length < count) {
    throw new RangeError(`A chunk of ${count} pages does not fit its buffers`);
  }
  if (features.length < count * PAGE_FEATURES) throw new RangeError("Feature buffer too small");
  const mask = kinds.reduce((bits, kind) => bits | (1 << kind), 0);
  native().gw_chunk_features(buf, pageKinds, count, mask, features);
}

/** What {@linkcode fileDelta} answers when the file's page is not the base it should be. */
export const NOT_A_BASE = 0xffffffff;

/**
 * Counts the 64-bit words in which `page` differs from page `basePage` of
 * `file` (the base), once that page is read and found to hash to `hash`
 * under `seed` (the content it should hold); when at most `maxWords`
 * differ, turns `page` into its difference from the base (word by word,
 * mod 2^64), which {@linkcode undoFileDelta} undoes. One C call for what a
 * sender does with each candidate base.
 *
 * @returns the words that differ (page untouched when more than maxWords), or
 * {@linkcode NOT_A_BASE} when the file's page is not a whole page, unreadable, or holds other
 * bytes now
 */
export function fileDelta(
  page: Uint8Array,
  file: RamFile,
  basePage: number,
  seed: bigint,
  hash: bigint,
  maxWords: number,
): number {
  checkPage(page, "A page");
  return native().gw_ram_delta(
    ramHandle(file, "read a base page"),
    basePage,
    seed,
    hash,
    page,
    maxWords,
  );
}

/** Differences to turn back into pages: page `slots[i]` of some data, against its base. */
export interface DeltaBases {
  /** File holding each difference's base. */
  files: RamFile[];
  /** Page of each base in its file. */
  pages: Uint32Array;
  /** Page of the data each difference is. */
  slots: Uint32Array;
}

/**
 * Turns differences made by {@linkcode fileDelta} back into pages: page
 * `slots[i]` of `data` += page `pages[i]` of `files[i]` (a receiver's
 * bases, anywhere in its files). One C call; consecutive bases of one file
 * are read with one `pread`.
 *
 * @returns -1, or the first difference whose base is not a whole page of its file (a short
 * last page: never a base), the differences before it undone
 * @throws NativeError when a base cannot be read
 */
export function undoFileDeltas(data: Uint8Array, bases: DeltaBases): number {
  const count = bases.slots.length;
  if (bases.files.length < count || bases.pages.length < count) {
    throw new RangeError("Each difference needs a base file and a base page");
  }
  const handles = new BigUint64Array(count);
  for (let i = 0; i < count; i++) {
    handles[i] = BigInt(Deno.UnsafePointer.value(ramHandle(bases.files[i]!, "read a base page")));
  }
  const bad = new Uint32Array(1);
  const dataPages = Math.floor(data.length / PAGE_SIZE);
  const result = native().gw_ram_undelta(
    handles,
    bases.pages,
    count,
    data,
    dataPages,
    bases.slots,
    bad,
  );
  if (result === -constants.errno.ENODATA) return bad[0]!;
  if (result === -constants.errno.ERANGE) {
    throw new RangeError(`Difference ${bad[0]} is page ${bases.slots[bad[0]!]} of ${dataPages}`);
  }
  check(
    result,
    `Cannot read page ${bases.pages[bad[0]!]} of "${bases.files[bad[0]!]?.path}" as a base`,
  );
  return -1;
}
