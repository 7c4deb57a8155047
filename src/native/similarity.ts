/**
 * Similar pages (ffi/similar.c): the features that pair a page with others
 * that may be similar, and the word-wise difference that carries a page
 * against a similar one.
 *
 * @module
 */
import { native } from "./library.ts";
import { PAGE_SIZE, type RamFile } from "./ram_file.ts";
import { ramHandle } from "./_handles.ts";
import { check } from "./errno.ts";
import { PageKind } from "./content_index.ts";

/** Features of a page (GW_PAGE_FEATURES). */
export const PAGE_FEATURES = 4;

/** Words of a page. */
export const PAGE_WORDS = PAGE_SIZE / 8;

const NEW = Uint8Array.of(PageKind.New);

function checkPage(page: Uint8Array, what: string): void {
  if (page.length !== PAGE_SIZE) {
    throw new RangeError(`${what} must be one page, not ${page.length} bytes`);
  }
}

/**
 * Writes the page's {@linkcode PAGE_FEATURES} features into `features` at
 * `offset`: 0 for a sampled block that is all zero, else a hash of it.
 * Pages that share a non-zero feature at the same place may be similar.
 */
export function pageFeatures(page: Uint8Array, features: Uint32Array, offset = 0): void {
  checkPage(page, "A page to take features of");
  if (offset + PAGE_FEATURES > features.length) throw new RangeError("Feature buffer too small");
  native().gw_chunk_features(
    page,
    NEW,
    1,
    1 << PageKind.New,
    features.subarray(offset, offset + PAGE_FEATURES),
  );
}

/**
 * {@linkcode pageFeatures} of each of the first `count` pages of a scanned
 * chunk whose kind is one of `kinds` (those whose bytes the scan kept),
 * page i's at `features[i * PAGE_FEATURES]`; zeros for the others. One
 * call a chunk.
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

/**
 * Counts the 64-bit words in which `page` differs from `base`; when that
 * is at most `maxWords`, turns `page` into its difference from `base`
 * (word by word, mod 2^64), which {@linkcode undoPageDelta} undoes.
 *
 * @returns the words that differ (page untouched when more than maxWords)
 */
export function pageDelta(page: Uint8Array, base: Uint8Array, maxWords: number): number {
  checkPage(page, "A page");
  checkPage(base, "A base page");
  return native().gw_page_delta(page, base, maxWords);
}

/** Turns a difference made by {@linkcode pageDelta} back into the page: page += base. */
export function undoPageDelta(page: Uint8Array, base: Uint8Array): void {
  checkPage(page, "A page");
  checkPage(base, "A base page");
  native().gw_page_undelta(page, base);
}

/** What {@linkcode fileDelta} answers when the file's page is not the base it should be. */
export const NOT_A_BASE = 0xffffffff;

/**
 * {@linkcode pageDelta} against page `page` of `file`, once that page is
 * read and found to hash to `hash` under `seed` (the content it should
 * hold): one C call for what a sender does with each candidate base.
 *
 * @returns the words that differ (page untouched when more than maxWords), or
 * {@linkcode NOT_A_BASE} when the file's page is a hole, unreadable, or holds other bytes now
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

/**
 * {@linkcode undoPageDelta} with page `basePage` of `file` as the base (a
 * receiver's base, anywhere in its files: one C call, one `pread`).
 *
 * @throws NativeError when that page cannot be read
 */
export function undoFileDelta(page: Uint8Array, file: RamFile, basePage: number): void {
  checkPage(page, "A page");
  check(
    native().gw_ram_undelta(ramHandle(file, "read a base page"), basePage, page),
    `Cannot read page ${basePage} of "${file.path}" as a base`,
  );
}
