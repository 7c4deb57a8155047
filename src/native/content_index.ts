/**
 * The gang's content index: each distinct page content once, for all guests.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";
import { ramHandle } from "./_handles.ts";
import { hugePageBuffer } from "./memory.ts";
import { checkRamResult, PAGE_SIZE, type RamFile } from "./ram_file.ts";

/** What a scan says about one page (values of `ScanBuffers.kinds`). */
export const PageKind = {
  /** Every byte is zero (holes included), and it was not zero before. */
  Zero: 0,
  /** A content seen for the first time: `ids[i]` is its new id. */
  New: 1,
  /** A content already indexed: `ids[i]` is its id. */
  Duplicate: 2,
  /** Same hash as at this page's previous scan (`ids[i]` as before). */
  Unchanged: 3,
  /** Not examined: its mask byte was 0. */
  Skipped: 4,
} as const;

/** Content ids that are not contents. */
export const ContentId = {
  /** The page was never scanned. */
  None: 0xffffffff,
  /** The page was zero at its last scan. */
  Zero: 0xfffffffe,
} as const;

/** Indexes into `ScanBuffers.stats` (running totals a scan adds to). */
export const ScanStat = {
  /** Zero pages, changed or not. */
  Zero: 0,
  /** Pages that brought a new content. */
  New: 1,
  /** Duplicates of a content held in the same guest. */
  DuplicateWithin: 2,
  /** Duplicates of a content held by another guest. */
  DuplicateAcross: 3,
  /** Non-zero pages unchanged since their last scan. */
  Unchanged: 4,
  /** Pages read from data regions. */
  PagesRead: 5,
  /** Pages skipped as holes. */
  PagesHole: 6,
} as const;

/** Buffers one scan call fills; make them once with {@linkcode scanBuffers}. */
export interface ScanBuffers {
  /**
   * Page contents, `pages * PAGE_SIZE` bytes: after a scan, the bytes of
   * every examined page that is not a hole, as read (the snapshot its hash
   * is of).
   */
  buf: Uint8Array;
  /** A {@linkcode PageKind} per page. */
  kinds: Uint8Array;
  /** A content id per page. */
  ids: Uint32Array;
  /** Running totals, indexed by {@linkcode ScanStat}. */
  stats: BigUint64Array;
}

/** Options of {@linkcode ContentIndex.scan}. */
export interface ScanOptions {
  /** One byte a page: 0 = skip this page. Default: examine all. */
  mask?: Uint8Array;
  /**
   * Threads for the page work (reads, zero checks, hashes), the caller's
   * included; lookups in the index stay on the caller's thread. A positive
   * integer; more than {@linkcode MAX_SCAN_THREADS} run as that many. Default 1.
   */
  threads?: number;
  /**
   * Which pages' bytes the buffer must hold afterwards:
   * - `"all"` (the default): every examined page that is not a hole;
   * - `"changed"`: only pages whose hash changed (kinds New and Duplicate).
   *   Pages scanned before are then hashed where they lie, through a
   *   mapping of the guest's file kept for the next scans, and only changed
   *   ones are copied (the lab's final round of a 256 MiB guest: 44 ms
   *   instead of 68, docs/design.md);
   * - `"none"`: no page's (the buffer is scratch), for a scan that only
   *   indexes: pages scanned before are hashed and compared where they lie,
   *   none copied; a page's first read is a pread into the buffer, as in
   *   any scan (a first read through a mapping faults, which costs more
   *   than the copy on these VMs: docs/design.md).
   */
  bytes?: PageBytes;
}

/** How scans read a page for the first time (see {@linkcode ContentIndex.setFirstReads}). */
export type FirstReads = "measured" | "copy" | "in place";

const FIRST_READS: Record<FirstReads, number> = { measured: 0, copy: 1, "in place": 2 };

/** Which examined pages' bytes a scan leaves in its buffer (see {@linkcode ScanOptions.bytes}). */
export type PageBytes = "all" | "changed" | "none";

/** The most threads a scan's page work runs on (the C library's GW_MAX_THREADS): more are bound by memory. */
export const MAX_SCAN_THREADS = 8;

/** `threads` as a scan uses it: a positive integer, at most {@linkcode MAX_SCAN_THREADS}. */
export function scanThreads(threads: number): number {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`Scan threads must be a positive integer, not ${threads}`);
  }
  return Math.min(threads, MAX_SCAN_THREADS);
}

/** `gw_index_scan`'s flags for each {@linkcode PageBytes}. */
const SCAN_FLAGS: Record<PageBytes, number> = { all: 0, changed: 1, none: 2 };

/**
 * Makes the helper threads of `threads`-thread scans now (one set for the
 * process, otherwise made by the first scan that needs them), so that a
 * scan that must be quick, such as a final round with guests paused, does
 * not wait for them.
 *
 * @throws RangeError unless `threads` is a positive integer
 */
export function startScanThreads(threads: number): void {
  native().gw_scan_threads_start(scanThreads(threads));
}

/**
 * Allocates the buffers for scans of up to `pages` pages a call (the page
 * bytes on 2 MiB pages where the kernel allows, see
 * {@linkcode hugePageBuffer}).
 *
 * Requires `--allow-ffi`.
 */
export function scanBuffers(pages: number): ScanBuffers {
  return {
    buf: hugePageBuffer(pages * PAGE_SIZE),
    kinds: new Uint8Array(pages),
    ids: new Uint32Array(pages),
    stats: new BigUint64Array(8),
  };
}

/** Options of {@linkcode ContentIndex.create}. */
export interface ContentIndexOptions {
  /** Seed of the page hashes (random per migration). Default 0. */
  seed?: bigint;
  /** Keep only the top bits of each hash: tests force collisions with it. Default 64. */
  hashBits?: number;
}

/**
 * A content index shared by a gang of guests. Hash matches are confirmed
 * by a byte compare against the page that holds the content.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { ContentIndex, scanBuffers } from "./content_index.ts";
 * import { RamFile } from "./ram_file.ts";
 *
 * using ram = RamFile.open("/dev/shm/vm1");
 * using index = ContentIndex.create();
 * const guest = index.addGuest(ram);
 * const out = scanBuffers(256);
 * index.scan(guest, 0, Math.min(256, ram.pages), out);
 * ```
 */
export class ContentIndex implements Disposable {
  #handle: Deno.PointerObject | undefined;
  #guests: RamFile[] = [];
  /**
   * Views of each guest's arrays, made once: the arrays never move, and a
   * view made per call costs more the larger the guest (V8 counts each view
   * of a 16 GiB guest's hashes as 32 MiB of new memory and collects
   * garbage for it), which made one large guest slower to send than the
   * same pages split among many.
   */
  #hashViews: BigUint64Array[] = [];
  #contentViews: Uint32Array[] = [];
  #threads = 1; // as last set in the C index
  /** The seed of every page hash of this index. */
  readonly seed: bigint;

  private constructor(handle: Deno.PointerObject, seed: bigint) {
    this.#handle = handle;
    this.seed = seed;
  }

  /** Creates an empty index. */
  static create(options: ContentIndexOptions = {}): ContentIndex {
    const seed = options.seed ?? 0n;
    if (typeof seed !== "bigint" || seed < 0n || seed >= 2n ** 64n) {
      // A number would be taken as one (FFI converts it), and a seed is 64 bits of a bigint.
      throw new TypeError(`The hash seed must be a bigint of 64 bits (randomSeed()), got ${seed}`);
    }
    const out = new BigUint64Array(1);
    check(
      native().gw_index_new(seed, options.hashBits ?? 64, out),
      "Cannot create the content index",
    );
    return new ContentIndex(Deno.UnsafePointer.create(out[0]!)!, seed);
  }

  #ptr(): Deno.PointerObject {
    if (!this.#handle) throw new Error("Cannot use the content index: it is closed");
    return this.#handle;
  }

  /**
   * Adds a guest; the RAM file must stay open as long as the index.
   *
   * @returns the guest's number in this index (0, 1, ...)
   */
  addGuest(ram: RamFile): number {
    const guest = check(
      native().gw_index_add_guest(this.#ptr(), ramHandle(ram, "index guest")),
      `Cannot index guest RAM "${ram.path}"`,
    );
    this.#guests.push(ram);
    return guest;
  }

  /**
   * Scans pages [first, first + count) of a guest into `out`, comparing
   * each with its previous scan and with the whole gang.
   *
   * @returns the number of pages examined
   */
  scan(
    guest: number,
    first: number,
    count: number,
    out: ScanBuffers,
    options: ScanOptions = {},
  ): number {
    const { mask, bytes = "all" } = options;
    const threads = scanThreads(options.threads ?? 1);
    if (out.kinds.length < count || out.ids.length < count || out.buf.length < count * PAGE_SIZE) {
      throw new RangeError(`Scan buffers hold fewer than ${count} pages`);
    }
    if (mask && mask.length < count) throw new RangeError("Scan mask too small");
    const ram = this.#guests[guest];
    if (!ram) throw new RangeError(`No guest ${guest} in this index`);
    if (threads !== this.#threads) {
      native().gw_index_set_threads(this.#ptr(), threads);
      this.#threads = threads;
    }
    // Any guest's file may be read: a page's content is compared with the page that holds it.
    return checkRamResult(
      native().gw_index_scan(
        this.#ptr(),
        guest,
        first,
        count,
        mask ?? null,
        SCAN_FLAGS[bytes],
        out.buf,
        out.kinds,
        out.ids,
        out.stats,
      ),
      `Cannot scan pages ${first}..${first + count} of "${ram.path}"`,
      this.#guests,
    );
  }

  /**
   * How later scans read a page for the first time: `"measured"` (the
   * default: the faster of the two ways, measured as they go), `"copy"` (a
   * read into the buffer) or `"in place"` (through a mapping of the file,
   * copied into the buffer only when the scan wants its bytes and it holds
   * data). Their results, the buffer's wanted bytes included, are the same
   * either way; benchmarks and tests choose one.
   */
  setFirstReads(way: FirstReads): void {
    native().gw_index_set_first_reads(this.#ptr(), FIRST_READS[way]);
  }

  /**
   * Of every `stride`-th page of a guest from page `offset`, how many no
   * longer hold what their last scan found. Reads those pages and changes
   * nothing: an estimate of what a scan now would find changed, at
   * 1/stride of its cost.
   */
  countChanged(guest: number, stride: number, offset: number): number {
    const ram = this.#guests[guest];
    if (!ram) throw new RangeError(`No guest ${guest} in this index`);
    return checkRamResult(
      native().gw_index_count_changed(this.#ptr(), guest, stride, offset),
      `Cannot read pages of "${ram.path}"`,
      this.#guests,
    );
  }

  /** Each page's hash at its last scan (a live view: valid until close). */
  pageHashes(guest: number): BigUint64Array {
    return this.#hashViews[guest] ??= new BigUint64Array(
      this.#guestArray(guest, 8, native().gw_index_page_hashes),
    );
  }

  /** Each page's content id at its last scan (a live view: valid until close). */
  pageContents(guest: number): Uint32Array {
    return this.#contentViews[guest] ??= new Uint32Array(
      this.#guestArray(guest, 4, native().gw_index_page_contents),
    );
  }

  /** The memory of one of a guest's per-page arrays, `bytes` a page. */
  #guestArray(
    guest: number,
    bytes: number,
    array: (index: Deno.PointerValue, guest: number) => Deno.PointerValue,
  ): ArrayBuffer {
    const pages = this.#pages(guest);
    return Deno.UnsafePointerView.getArrayBuffer(array(this.#ptr(), guest)!, pages * bytes);
  }

  #pages(guest: number): number {
    if (!this.#guests[guest]) throw new RangeError(`No guest ${guest} in this index`);
    return native().gw_index_guest_pages(this.#ptr(), guest);
  }

  /** Distinct contents indexed so far. */
  get contents(): number {
    return native().gw_index_contents(this.#ptr());
  }

  /** Bytes of the content table (not counting per-page state). */
  get memoryBytes(): number {
    return Number(native().gw_index_memory(this.#ptr()));
  }

  /** Frees the index; safe to call twice. Views from pageHashes/pageContents die with it. */
  close(): void {
    if (!this.#handle) return;
    native().gw_index_free(this.#handle);
    this.#handle = undefined;
    this.#hashViews = [];
    this.#contentViews = [];
  }

  /** Closes it, for `using`: see {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
