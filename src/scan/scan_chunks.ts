/**
 * Walks a guest's RAM through the content index, a chunk of pages a call.
 * The preparation scan, the re-scan and every migration round use it.
 *
 * @module
 */
import { type PageBytes, type ScanBuffers, scanBuffers } from "../native/content_index.ts";
import type { Gang } from "./gang.ts";
import type { ThreadChoice } from "./thread_choice.ts";

/**
 * Pages per C call: 1 MiB of RAM. Large enough that the FFI crossing and
 * the lseek calls vanish, small enough that the pages just read are still
 * in cache when they are hashed and compared.
 */
export const CHUNK_PAGES = 256;

/**
 * Pages per C call when several threads share its page work: 16 MiB.
 * Waking the helper threads costs tens of microseconds on a VM, as much as
 * the page work of a 1 MiB chunk; at 16 MiB two threads scanned 1.3-1.5x
 * faster than one here, at 1 MiB slower.
 */
export const PARALLEL_CHUNK_PAGES = 4096;

/** One scanned chunk: pages [first, first + count) of a guest, results in the buffers. */
export interface ScannedChunk {
  /** First page of the chunk. */
  first: number;
  /** Pages in the chunk. */
  count: number;
  /** Pages examined (the mask may skip some). */
  examined: number;
}

/** Options of {@linkcode scanChunks}. */
export interface ScanChunksOptions {
  /** One byte per page of the guest: 0 = do not examine this page. Default: all. */
  mask?: Uint8Array;
  /** Buffers to fill (reused by every chunk). Default: fresh ones. */
  out?: ScanBuffers;
  /**
   * Threads for the page work (see ContentIndex.scan), or a
   * {@linkcode ThreadChoice} that picks them chunk by chunk from the
   * measured speed. Default 1.
   */
  threads?: number | ThreadChoice;
  /** Which pages' bytes the buffers must hold (see ContentIndex.scan). Default `"all"`. */
  bytes?: PageBytes;
}

/**
 * Scans a whole guest chunk by chunk. Each yielded chunk's results are in
 * `out` until the next chunk overwrites them.
 *
 * Requires `--allow-ffi`.
 */
export function* scanChunks(
  gang: Gang,
  guest: number,
  options: ScanChunksOptions = {},
): Generator<ScannedChunk> {
  const out = options.out ?? scanBuffers(CHUNK_PAGES);
  const pages = gang.guests[guest]!.ram.pages;
  const choice = typeof options.threads === "object" ? options.threads : undefined;
  const fixed = typeof options.threads === "number" ? options.threads : 1;
  for (let first = 0, count = 0; first < pages; first += count) {
    const threads = choice?.next() ?? fixed;
    // A chosen single thread gets the chunk that suits one thread best.
    const chunk = choice && threads === 1
      ? Math.min(CHUNK_PAGES, out.kinds.length)
      : out.kinds.length;
    count = Math.min(chunk, pages - first);
    const mask = options.mask?.subarray(first, first + count);
    if (mask && !mask.includes(1)) continue;
    // Timed only for a choice: every round of a migration walks its chunks here.
    const started = choice ? performance.now() : 0;
    const examined = gang.index.scan(guest, first, count, out, {
      mask,
      threads,
      bytes: options.bytes,
    });
    choice?.record(threads, examined, performance.now() - started);
    yield { first, count, examined };
  }
}
