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
 * {@linkcode compress} on a thread of the library's own, while the caller
 * goes on with its work: {@linkcode start} a run, then {@linkcode finish}
 * it. One run at a time; neither buffer may be touched in between. (Deno's
 * non-blocking FFI calls did the same, but their wake-ups cost 0.6-1.3 ms
 * a call on this VM, as much as zstd's own time for a frame.)
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { CompressJob, compressBound } from "./compression.ts";
 *
 * const pages = new Uint8Array(128 * 4096);
 * const out = new Uint8Array(compressBound(pages.length));
 * using job = new CompressJob();
 * job.start(pages, out);
 * // ... other work ...
 * const { size } = job.finish();
 * ```
 */
export class CompressJob implements Disposable {
  #handle: Deno.PointerObject | undefined;
  #ns = new BigUint64Array(1);
  /** The buffers of the run started and not finished: the job's thread uses them, so they must live. */
  #running: [Uint8Array, Uint8Array] | undefined;

  constructor() {
    const out = new BigUint64Array(1);
    check(native().gw_compress_job_new(out), "Cannot make a compression job");
    this.#handle = Deno.UnsafePointer.create(out[0]!)!;
  }

  #ptr(): Deno.PointerObject {
    if (!this.#handle) throw new Error("Cannot use the compression job: it is closed");
    return this.#handle;
  }

  /**
   * Starts compressing `src` into `dst` (which must hold
   * {@linkcode compressBound} bytes).
   *
   * @throws Error while a run is started and not finished
   */
  start(src: Uint8Array, dst: Uint8Array, level = COMPRESSION_LEVEL): void {
    if (this.#running) {
      throw new Error("Cannot start compressing pages: the job's last run is not finished");
    }
    check(
      native().gw_compress_job_start(this.#ptr(), src, src.length, dst, dst.length, level),
      "Cannot start compressing pages",
    );
    this.#running = [src, dst];
  }

  /**
   * Waits for the run started last.
   *
   * @returns the compressed size, and the milliseconds zstd took on its thread
   */
  finish(): { size: number; ms: number } {
    if (!this.#running) throw new Error("Cannot finish compressing pages: no run was started");
    const result = native().gw_compress_job_finish(this.#ptr(), this.#ns);
    this.#running = undefined;
    const size = check(result, "Cannot compress pages", {
      EOVERFLOW: "the compressed data does not fit the output buffer",
    });
    return { size, ms: Number(this.#ns[0]) / 1e6 };
  }

  /** Ends the job's thread (after a run still going); safe to call twice. */
  close(): void {
    if (!this.#handle) return;
    native().gw_compress_job_free(this.#handle);
    this.#handle = undefined;
    this.#running = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
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
