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
    native().gw_compress(src, src.length, dst, dst.length, level),
    "Cannot compress pages",
  );
}

/** Largest compressed size of `bytes` bytes. */
export function compressBound(bytes: number): number {
  return native().gw_compress_bound(bytes);
}

/**
 * Decompresses `src` into `dst`, which it must fill exactly.
 *
 * @returns false when `src` is not a zstd frame of exactly `dst.length` bytes
 */
export function decompress(src: Uint8Array, dst: Uint8Array): boolean {
  return native().gw_decompress(src, src.length, dst, dst.length) === 0;
}
