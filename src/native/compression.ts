/**
 * zstd compression of page data, for the wire.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/** zstd level: 1 keeps up with a Gigabit link on one core of these machines. */
export const COMPRESSION_LEVEL = 1;

/**
 * Compresses `src` into `dst` (which must hold {@linkcode compressBound}
 * bytes). Requires `--allow-ffi`.
 *
 * @returns the compressed size
 */
export function compress(src: Uint8Array, dst: Uint8Array, level = COMPRESSION_LEVEL): number {
  return check(
    native().gw_compress(src, src.length, dst, dst.length, level, null),
    "Cannot compress pages",
  );
}

/**
 * {@linkcode compress} on another thread (Deno's pool for blocking calls):
 * the caller's thread goes on with its own work meanwhile. Neither buffer
 * may be touched until the promise settles. Requires `--allow-ffi`.
 *
 * @returns the compressed size, and the milliseconds zstd took on its
 * thread (the promise may settle later: the caller's thread was busy)
 */
export async function compressOffThread(
  src: Uint8Array,
  dst: Uint8Array,
  level = COMPRESSION_LEVEL,
): Promise<{ size: number; ms: number }> {
  const ns = new BigUint64Array(1);
  const size = check(
    await native().gw_compress_off_thread(src, src.length, dst, dst.length, level, ns),
    "Cannot compress pages",
  );
  return { size, ms: Number(ns[0]) / 1e6 };
}

/**
 * Largest compressed size of `bytes` bytes.
 *
 * @throws RangeError when that size does not fit in 32 bits
 */
export function compressBound(bytes: number): number {
  const bound = native().gw_compress_bound(bytes);
  if (bound === 0 && bytes > 0) {
    throw new RangeError(`Cannot compress ${bytes} bytes at once: the output could exceed 4 GiB`);
  }
  return bound;
}

/**
 * Decompresses `src` into `dst`, which it must fill exactly.
 *
 * @returns false when `src` is not a zstd frame of exactly `dst.length` bytes
 */
export function decompress(src: Uint8Array, dst: Uint8Array): boolean {
  return native().gw_decompress(src, src.length, dst, dst.length) === 0;
}
