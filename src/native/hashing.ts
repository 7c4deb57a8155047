/**
 * Page hashes (XXH3-64, keyed by a seed) and RAM digests.
 *
 * @module
 */
import { native } from "./library.ts";
import { PAGE_SIZE } from "./ram_file.ts";

/**
 * Hashes count pages of buf.
 *
 * Requires `--allow-ffi`.
 *
 * @returns each page's hash and whether it is all zeros
 */
export function hashPages(
  buf: Uint8Array,
  count: number,
  seed: bigint,
): { hashes: BigUint64Array; zero: Uint8Array } {
  if (buf.length < count * PAGE_SIZE) throw new RangeError("Page buffer too small");
  const hashes = new BigUint64Array(count);
  const zero = new Uint8Array(count);
  native().gw_hash_pages(buf, count, seed, hashes, zero);
  return { hashes, zero };
}

/** The hash every zero page has under seed. */
export function zeroPageHash(seed: bigint): bigint {
  return BigInt(native().gw_zero_page_hash(seed));
}

/** XXH3-128 over page hashes, keyed by a seed: 16 bytes. */
export function hashesDigest(pageHashes: BigUint64Array, seed: bigint): Uint8Array {
  const out = new Uint8Array(16);
  native().gw_digest(pageHashes, pageHashes.length, seed, out);
  return out;
}

/**
 * {@linkcode hashesDigest} of pages given by their contents: page `i`'s
 * hash is `contentHashes[ids[i]]`, or `zero.hash` where `ids[i]` is
 * `zero.id`. The hashes are looked up in C: a JavaScript loop over a
 * guest's pages took 5-16 ms before the JIT compiled it, and it ran while
 * the guest was paused.
 *
 * Requires `--allow-ffi`.
 *
 * @throws RangeError when an id is neither `zero.id` nor a content's
 * @throws Error when the C library runs out of memory
 */
export function contentsDigest(
  ids: Uint32Array,
  contentHashes: BigUint64Array,
  zero: { id: number; hash: bigint },
  seed: bigint,
): Uint8Array {
  const out = new Uint8Array(16);
  const result = native().gw_contents_digest(
    ids,
    ids.length,
    contentHashes,
    contentHashes.length,
    zero.id,
    zero.hash,
    seed,
    out,
  );
  if (result === -1) throw new RangeError("A page's content id is not a content's");
  if (result !== 0) throw new Error("Cannot compute a digest: out of memory");
  return out;
}

/** A digest as 32 hex digits. */
export function digestHex(digest: Uint8Array): string {
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A guest's RAM digest: {@linkcode hashesDigest} of its per-page hashes, as
 * 32 hex digits. Source and target compute it the same way from the hashes
 * of what they hold.
 */
export function ramDigest(pageHashes: BigUint64Array, seed: bigint): string {
  return digestHex(hashesDigest(pageHashes, seed));
}
