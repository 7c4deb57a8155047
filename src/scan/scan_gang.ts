/**
 * The preparation phase: scan every page of every guest of a gang, hash
 * it and index identical contents (each match confirmed byte by byte).
 *
 * @module
 */
import {
  MAX_SCAN_THREADS,
  PageKind,
  type ScanBuffers,
  scanBuffers,
  ScanStat,
  scanThreads,
} from "../native/content_index.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import type { Gang } from "./gang.ts";
import { CHUNK_PAGES, PARALLEL_CHUNK_PAGES, scanChunks } from "./scan_chunks.ts";
import { ThreadChoice } from "./thread_choice.ts";
import { shareEventLoop } from "../_delay.ts";

/** Page counts of a scan, for one guest or the whole gang. */
export interface ScanCounts {
  /** Pages, ceil(size / 4096). */
  pages: number;
  /** Pages whose every byte is zero (holes included). */
  zero: number;
  /** Contents first seen here. */
  unique: number;
  /** Non-zero pages whose content was seen earlier (in any guest). */
  duplicate: number;
  /** Duplicates of a content first seen in the same guest. */
  duplicateWithin: number;
  /** Duplicates of a content first seen in an earlier guest. */
  duplicateAcross: number;
}

/** What the scan found in one guest. */
export interface GuestScanReport extends ScanCounts {
  /** The guest's name. */
  name: string;
  /** Its RAM file. */
  path: string;
}

/** What the scan found in the whole gang. */
export interface ScanReport {
  /** Bytes per page (4096). */
  pageSize: number;
  /** One report per guest, in gang order. */
  guests: GuestScanReport[];
  /** Sums over the guests, plus bytes. */
  totals: ScanCounts & {
    /** Sum of the RAM file sizes. */
    bytes: number;
    /** unique x pageSize: what gang migration must send in full. */
    uniqueBytes: number;
  };
  /** Wall-clock time of the scan. */
  seconds: number;
  /** Bytes of the content index at the end (without per-page state). */
  indexBytes: number;
  /** Threads of the page work (with `"auto"`: the count measured faster at the end). */
  threads: number;
}

/** Options of {@linkcode scanGang}. */
export interface ScanGangOptions {
  /** Called after each chunk with pages done and pages in all. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Threads for the page work: reads, zero checks and hashes (see
   * ContentIndex.scan): a positive integer (more than 8 run as 8), or
   * `"auto"`: one or up to 8 (the cores), whichever is measured faster
   * while the scan runs (see {@linkcode ThreadChoice}).
   * Default 1: the guests being scanned run meanwhile, and other threads
   * would take their cores.
   */
  threads?: number | "auto";
}

/**
 * Scans every page of a gang (files in gang order, pages in file order).
 * A page is unique if its content appeared nowhere earlier in that order.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { Gang } from "./gang.ts";
 * import { scanGang } from "./scan_gang.ts";
 *
 * using gang = Gang.open([{ name: "a", path: "/dev/shm/a" }, { name: "b", path: "/dev/shm/b" }]);
 * const report = scanGang(gang);
 * console.log(report.totals.unique, "distinct contents");
 * ```
 */
export function scanGang(gang: Gang, options: ScanGangOptions = {}): ScanReport {
  const steps = scanSteps(gang, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** Work between two turns of {@linkcode scanGangInTurns}: short enough for a TLS handshake. */
const TURN_MS = 20;

/**
 * Scans like {@linkcode scanGang}, stopping every few milliseconds to let
 * the rest of this process run: a migration connects to its target (a
 * TLS handshake, the gang's introduction) while its preparation scan runs.
 *
 * Requires `--allow-ffi`.
 */
export async function scanGangInTurns(
  gang: Gang,
  options: ScanGangOptions = {},
): Promise<ScanReport> {
  const steps = scanSteps(gang, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await shareEventLoop(TURN_MS);
  }
}

/**
 * Buffers of scans that ended, by chunk size, for the next scans: the
 * first touch of fresh memory is slow on a VM (ffi/memory.c), and a
 * process that scans again (a benchmark, a tool that re-scans) would pay
 * it every time.
 */
const spares = new Map<number, ScanBuffers>();

/** Buffers for chunks of `pages`: spare ones if a scan left them, else fresh. */
function takeBuffers(pages: number): ScanBuffers {
  const spare = spares.get(pages);
  spares.delete(pages);
  return spare ?? scanBuffers(pages);
}

/** The scan, a chunk a step; its return value is the report. */
function* scanSteps(gang: Gang, options: ScanGangOptions): Generator<void, ScanReport> {
  const started = performance.now();
  const threads = options.threads === "auto"
    ? new ThreadChoice(Math.min(navigator.hardwareConcurrency, MAX_SCAN_THREADS))
    : scanThreads(options.threads ?? 1);
  const out = takeBuffers(threads === 1 ? CHUNK_PAGES : PARALLEL_CHUNK_PAGES);
  try {
    return yield* scanWith(gang, out, threads, options, started);
  } finally {
    spares.set(out.kinds.length, out);
  }
}

function* scanWith(
  gang: Gang,
  out: ScanBuffers,
  threads: number | ThreadChoice,
  options: ScanGangOptions,
  started: number,
): Generator<void, ScanReport> {
  const total = gang.pages;
  let done = 0;
  const guests: GuestScanReport[] = [];
  for (const guest of gang.guests) {
    out.stats.fill(0n);
    // It counts and indexes: no page's bytes are wanted (a page read before is hashed in place).
    const scanning = { out, threads, bytes: "none" as const };
    for (const chunk of scanChunks(gang, guest.number, scanning)) {
      done += chunk.count;
      options.onProgress?.(done, total);
      yield;
    }
    const stat = (i: number) => Number(out.stats[i]);
    const within = stat(ScanStat.DuplicateWithin);
    const across = stat(ScanStat.DuplicateAcross);
    guests.push({
      name: guest.name,
      path: guest.ram.path,
      pages: guest.ram.pages,
      zero: stat(ScanStat.Zero),
      unique: stat(ScanStat.New),
      duplicate: within + across,
      duplicateWithin: within,
      duplicateAcross: across,
    });
  }
  const sum = (key: keyof GuestScanReport) =>
    guests.reduce((total, g) => total + (g[key] as number), 0);
  const unique = sum("unique");
  return {
    pageSize: PAGE_SIZE,
    guests,
    totals: {
      pages: sum("pages"),
      zero: sum("zero"),
      unique,
      duplicate: sum("duplicate"),
      duplicateWithin: sum("duplicateWithin"),
      duplicateAcross: sum("duplicateAcross"),
      bytes: gang.bytes,
      uniqueBytes: unique * PAGE_SIZE,
    },
    seconds: (performance.now() - started) / 1000,
    indexBytes: gang.index.memoryBytes,
    threads: typeof threads === "number" ? threads : threads.preferred,
  };
}

/** {@linkcode estimateChangedPages} reads one page in this many (a prime: no power-of-two layout lines up with it). */
export const CHANGE_SAMPLE_STRIDE = 61;

/**
 * An estimate of the pages of a guest scanned before that a scan now would
 * find changed, from one page in {@linkcode CHANGE_SAMPLE_STRIDE} (from a
 * random start, so that no page layout hides from every estimate). It
 * reads those pages and changes nothing.
 *
 * Requires `--allow-ffi`.
 */
export function estimateChangedPages(gang: Gang, guest: number): number {
  const pages = gang.guests[guest]!.ram.pages;
  const offset = Math.floor(Math.random() * Math.min(CHANGE_SAMPLE_STRIDE, pages));
  const sampled = Math.ceil((pages - offset) / CHANGE_SAMPLE_STRIDE);
  const changed = gang.index.countChanged(guest, CHANGE_SAMPLE_STRIDE, offset);
  return Math.round((changed * pages) / sampled);
}

/**
 * Scans a guest again and returns exactly the pages whose content changed
 * since its last scan (by their 64-bit hash). This is the dirty-page
 * tracking used where the kernel has no soft-dirty bits.
 *
 * Requires `--allow-ffi`.
 *
 * @returns the changed page numbers, ascending
 */
export function rescanGuest(gang: Gang, guest: number): Uint32Array {
  const out = scanBuffers(CHUNK_PAGES);
  const changed: number[] = [];
  // Only the kinds are wanted: pages are hashed where they lie, none copied.
  for (const { first, count } of scanChunks(gang, guest, { out, bytes: "none" })) {
    for (let i = 0; i < count; i++) {
      if (out.kinds[i] !== PageKind.Unchanged) changed.push(first + i);
    }
  }
  return Uint32Array.from(changed);
}
