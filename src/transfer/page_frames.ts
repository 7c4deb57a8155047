/**
 * The frames that carry pages: PAGES (contents in full, possibly
 * compressed), DELTAS (contents as their difference from a similar content
 * the target holds, laid out as PAGES with a base per page), REFS (pages
 * that take a content the target holds) and ZEROS (runs of pages that
 * became zero). One layout each, shared by the encoder
 * (sender) and the decoder (receiver).
 *
 * @module
 */
import { PAGE_SIZE } from "../native/ram_file.ts";
import { decompress } from "../native/compression.ts";
import { hashesDigest } from "../native/hashing.ts";
import { DIGEST_BYTES } from "./digests.ts";
import {
  BodyReader,
  FrameFlag,
  FrameType,
  HEADER_BYTES,
  MAX_PAGES_PER_FRAME,
  ProtocolError,
  writeHeader,
} from "./protocol.ts";

/** Bytes of a PAGES frame's head before its entries: n u32, first content id u32, digest. */
const PAGES_HEAD_BYTES = 4 + 4 + DIGEST_BYTES;
/** Bytes of one PAGES entry: the page, u32. */
const PAGE_ENTRY_BYTES = 4;
/** Bytes a DELTAS entry has besides a PAGES entry's: the base content id u32. */
const BASE_BYTES = 4;

/**
 * The entries of a PAGES or DELTAS frame, as the sender makes them: entry
 * i brings content ids[i] (consecutive ids: the next ones the target
 * counts), whose hash is hashes[i], to page pages[i] of the frame's guest.
 * On the wire the ids are their first, and the hashes one digest.
 */
export interface PageEntries {
  pages: Uint32Array;
  ids: Uint32Array;
  hashes: BigUint64Array;
  /**
   * DELTAS only: the content (one the target holds) that page i's data is
   * the word-wise difference from (see `fileDelta`), or NONE (0xffffffff)
   * when its data is the page itself.
   */
  bases?: Uint32Array;
}

/**
 * A decoded PAGES or DELTAS frame: its entries, the digest of its pages'
 * hashes (for the receiver to check the pages against, once it has
 * hashed them: {@linkcode matchesDigest}), and the page data (a view into
 * the frame, or scratch).
 */
export interface PagesFrame {
  pages: Uint32Array;
  ids: Uint32Array;
  bases?: Uint32Array;
  digest: Uint8Array;
  data: Uint8Array;
}

/**
 * Whether pages of these hashes are the ones a frame's digest says. A PAGES
 * frame carries {@linkcode hashesDigest} of its pages' hashes (XXH3-128
 * over them in entry order, keyed by the migration's seed): one digest a
 * frame instead of a hash a page, 8 bytes a page off the link.
 */
export function matchesDigest(hashes: BigUint64Array, seed: bigint, digest: Uint8Array): boolean {
  const actual = hashesDigest(hashes, seed);
  return actual.length === digest.length && actual.every((b, i) => b === digest[i]);
}

/** Bytes of a PAGES (or DELTAS) body before its page data: the head and n entries. */
export function pagesDataOffset(n: number, deltas = false): number {
  return PAGES_HEAD_BYTES + n * (PAGE_ENTRY_BYTES + (deltas ? BASE_BYTES : 0));
}

/**
 * Decodes a PAGES body, copying the entries out. The data stays a view of
 * the body, or is decompressed into `scratch` (valid until its next use),
 * or into a new buffer when that is too small.
 */
export function decodePages(body: Uint8Array, flags = 0, scratch?: Uint8Array): PagesFrame {
  return decodePageFrame(body, flags, scratch, false);
}

/** Decodes a DELTAS body, as {@linkcode decodePages} does a PAGES body; `bases` is set. */
export function decodeDeltas(body: Uint8Array, flags = 0, scratch?: Uint8Array): PagesFrame {
  return decodePageFrame(body, flags, scratch, true);
}

function decodePageFrame(
  body: Uint8Array,
  flags: number,
  scratch: Uint8Array | undefined,
  deltas: boolean,
): PagesFrame {
  const what = deltas ? "Deltas" : "Pages";
  const r = new BodyReader(body, what);
  const n = r.u32();
  if (n === 0 || n > MAX_PAGES_PER_FRAME) throw new ProtocolError(`${what} frame with ${n} pages`);
  const compressed = (flags & FrameFlag.Compressed) !== 0;
  const entriesEnd = pagesDataOffset(n, deltas);
  const plainBytes = entriesEnd + n * PAGE_SIZE;
  if (compressed ? body.length <= entriesEnd : body.length !== plainBytes) {
    throw new ProtocolError(
      `${what} frame of ${n} pages has ${body.length} bytes, expected ${
        compressed ? `more than ${entriesEnd}` : plainBytes
      }`,
    );
  }
  const firstId = r.u32();
  const digest = r.bytes(DIGEST_BYTES).slice();
  const pages = new Uint32Array(n);
  const ids = new Uint32Array(n);
  const bases = deltas ? new Uint32Array(n) : undefined;
  for (let i = 0; i < n; i++) {
    pages[i] = r.u32();
    ids[i] = firstId + i;
    if (bases) bases[i] = r.u32();
  }
  const entries = { pages, ids, digest, ...(bases && { bases }) };
  if (!compressed) return { ...entries, data: r.bytes(n * PAGE_SIZE) };
  const data = scratch && scratch.length >= n * PAGE_SIZE
    ? scratch.subarray(0, n * PAGE_SIZE)
    : new Uint8Array(n * PAGE_SIZE);
  if (!decompress(r.bytes(body.length - entriesEnd), data)) {
    throw new ProtocolError(`${what} frame of ${n} pages holds no valid zstd data of ${n} pages`);
  }
  return { ...entries, data };
}

/** Decodes a body of n fixed pairs of u32 (REFS, ZEROS). */
export function decodePairs(body: Uint8Array, what: string): { a: Uint32Array; b: Uint32Array } {
  const r = new BodyReader(body, what);
  const n = r.u32();
  // A sender makes at most one entry per page of a frame's run of pages.
  if (n === 0 || n > MAX_PAGES_PER_FRAME) {
    throw new ProtocolError(`${what} frame with ${n} entries`);
  }
  if (body.length !== 4 + n * 8) {
    throw new ProtocolError(
      `${what} frame of ${n} entries has ${body.length} bytes, expected ${4 + n * 8}`,
    );
  }
  const a = new Uint32Array(n);
  const b = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = r.u32();
    b[i] = r.u32();
  }
  return { a, b };
}

/**
 * Bytes of a whole PAGES (or, with bases, DELTAS) frame of n pages whose
 * data takes `dataBytes` (default: uncompressed).
 */
export function pagesFrameBytes(n: number, dataBytes = n * PAGE_SIZE, deltas = false): number {
  return HEADER_BYTES + pagesDataOffset(n, deltas) + dataBytes;
}

/**
 * Writes a PAGES frame's header and entries (a DELTAS frame's when
 * `entries.bases` is given) into `out`, exactly {@linkcode pagesFrameBytes}
 * bytes. The caller writes the data at the returned offset.
 *
 * @param seed the migration's (HELLO's), which keys the pages' digest
 * @throws RangeError if the ids are not consecutive
 */
export function writePagesHead(
  out: Uint8Array,
  guest: number,
  entries: PageEntries,
  compressed: boolean,
  seed: bigint,
): number {
  const { pages, ids, hashes, bases } = entries;
  const n = pages.length;
  for (let i = 1; i < n; i++) {
    if (ids[i] !== ids[0]! + i) {
      throw new RangeError(
        `A frame's contents take consecutive ids: ${ids[0]} then ${ids[i]} at ${i}`,
      );
    }
  }
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  writeHeader(
    view,
    0,
    bases ? FrameType.Deltas : FrameType.Pages,
    guest,
    out.length - HEADER_BYTES,
    compressed ? FrameFlag.Compressed : 0,
  );
  view.setUint32(HEADER_BYTES, n, true);
  view.setUint32(HEADER_BYTES + 4, ids[0]!, true);
  out.set(hashesDigest(hashes, seed), HEADER_BYTES + 8);
  let o = HEADER_BYTES + PAGES_HEAD_BYTES;
  for (let i = 0; i < n; i++) {
    view.setUint32(o, pages[i]!, true);
    o += PAGE_ENTRY_BYTES;
    if (bases) {
      view.setUint32(o, bases[i]!, true);
      o += BASE_BYTES;
    }
  }
  return o;
}

/**
 * Writes an uncompressed PAGES (or DELTAS) frame into `out` (exactly
 * {@linkcode pagesFrameBytes}`(n)` bytes): the data of entry i is page
 * slots[i] of src.
 */
export function writePagesFrame(
  out: Uint8Array,
  guest: number,
  entries: PageEntries,
  src: Uint8Array,
  slots: Uint16Array,
  seed: bigint,
): void {
  gatherPages(out.subarray(writePagesHead(out, guest, entries, false, seed)), src, slots);
}

/**
 * Copies page slots[i] of src to page i of dst, a run of consecutive
 * slots at a time (a view per page made a quarter of a million objects a
 * GiB for the collector).
 */
export function gatherPages(dst: Uint8Array, src: Uint8Array, slots: Uint16Array): void {
  for (let i = 0; i < slots.length;) {
    let end = i + 1;
    while (end < slots.length && slots[end] === slots[end - 1]! + 1) end++;
    const from = slots[i]! * PAGE_SIZE;
    dst.set(src.subarray(from, from + (end - i) * PAGE_SIZE), i * PAGE_SIZE);
    i = end;
  }
}

/** Bytes of a whole REFS or ZEROS frame of n entries. */
export function pairsFrameBytes(n: number): number {
  return HEADER_BYTES + 4 + n * 8;
}

/** Writes a REFS ((page, id) pairs) or ZEROS ((first, pages) runs) frame into `out`. */
export function writePairsFrame(
  out: Uint8Array,
  type: typeof FrameType.Refs | typeof FrameType.Zeros,
  guest: number,
  a: Uint32Array,
  b: Uint32Array,
): void {
  const n = a.length;
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  writeHeader(view, 0, type, guest, 4 + n * 8);
  view.setUint32(HEADER_BYTES, n, true);
  for (let i = 0, o = HEADER_BYTES + 4; i < n; i++, o += 8) {
    view.setUint32(o, a[i]!, true);
    view.setUint32(o + 4, b[i]!, true);
  }
}
