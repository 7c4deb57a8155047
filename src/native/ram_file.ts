/**
 * A guest's RAM file, read around its holes and written in place.
 *
 * @module
 */
import { native } from "./library.ts";
import { check, NativeError } from "./errno.ts";
import { constants } from "node:os";
import { ramHandle, setRamHandle } from "./_handles.ts";

/** Bytes in a page: the unit of everything gangway moves. */
export const PAGE_SIZE = 4096;

/** Options of {@linkcode RamFile.open}. */
export interface RamFileOptions {
  /** Open read-write (a migration target). Default: read-only. */
  write?: boolean;
  /** Create the file when it is missing (implies `write`). */
  create?: boolean;
  /**
   * Create the file, failing with EEXIST when anything is at its path, a
   * dangling symbolic link included (implies `write`).
   */
  createNew?: boolean;
  /** Fail with ELOOP when the path names a symbolic link rather than follow it. */
  noFollow?: boolean;
}

/** What {@linkcode RamFile.stat} returns. */
export interface RamFileStat {
  /** Device number: with `ino`, identifies the file whatever its path. */
  dev: bigint;
  /** Inode number. */
  ino: bigint;
  /** Size in bytes now. */
  size: number;
  /** Allocated 512-byte blocks (holes take none). */
  blocks: number;
  /** st_mode: the type and the permission bits. */
  mode: number;
  /** Whether this process's effective user owns the file (one another user planted is not trusted). */
  ownedByThisUser: boolean;
}

/** Access hints for {@linkcode RamFile.advise}. */
export type RamAdvice = "sequential" | "dontneed";

const OPEN_WRITE = 1;
const OPEN_CREATE = 2;
const OPEN_NEW = 4;
const OPEN_NOFOLLOW = 8;
const ADVICE: Record<RamAdvice, number> = { sequential: 1, dontneed: 2 };

/**
 * A guest RAM file opened through the C library.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * using ram = RamFile.open("/dev/shm/vm1");
 * const buf = new Uint8Array(256 * PAGE_SIZE);
 * const hasData = new Uint8Array(256);
 * ram.read(0, 256, buf, hasData); // holes come back as zero pages
 * ```
 */
export class RamFile implements Disposable {
  /** The path it was opened with. */
  readonly path: string;
  #size: number;

  private constructor(path: string, handle: Deno.PointerObject) {
    this.path = path;
    setRamHandle(this, handle);
    this.#size = Number(native().gw_ram_size(handle));
  }

  /**
   * Opens a RAM file.
   *
   * @throws NativeError naming the file and the reason
   */
  static open(path: string, options: RamFileOptions = {}): RamFile {
    const flags = (options.write || options.create || options.createNew ? OPEN_WRITE : 0) |
      (options.create ? OPEN_CREATE : 0) | (options.createNew ? OPEN_NEW : 0) |
      (options.noFollow ? OPEN_NOFOLLOW : 0);
    const out = new BigUint64Array(1);
    check(
      native().gw_ram_open(new TextEncoder().encode(path + "\0"), flags, out),
      `Cannot open guest RAM "${path}"`,
      {
        EINVAL: "not a regular file",
        EFBIG: "it is 16 TiB or more (2^32 - 2 pages), over what gangway takes for a guest",
      },
    );
    return new RamFile(path, Deno.UnsafePointer.create(out[0]!)!);
  }

  /** Premaps on their thread, until they end: the C handle must outlive them. */
  #premapping: Promise<void> | undefined;

  #handle(what: string): Deno.PointerObject {
    return ramHandle(this, `${what} "${this.path}"`);
  }

  /** Size in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Pages, counting a short last page as one. */
  get pages(): number {
    return Math.ceil(this.#size / PAGE_SIZE);
  }

  /** Sets the size of a writable file; new space is a hole (zero pages). */
  resize(size: number): void {
    check(
      native().gw_ram_resize(this.#handle("resize"), BigInt(size)),
      `Cannot resize guest RAM "${this.path}"`,
    );
    this.#size = size;
  }

  /**
   * Reads pages [first, first + count) into buf; hasData[i] = 0 marks a
   * page in a hole (returned as zeros, never read or allocated).
   *
   * @returns the number of pages read from data regions
   */
  read(first: number, count: number, buf: Uint8Array, hasData: Uint8Array): number {
    checkBuffers(count, buf, hasData);
    return checkRamResult(
      native().gw_ram_read(this.#handle("read"), first, count, buf, hasData),
      `Cannot read pages ${first}..${first + count} of "${this.path}"`,
      [this],
    );
  }

  /**
   * Writes pages.length pages from buf, page i to page number pages[i]. A
   * short last page is written up to the end of the file, which never grows.
   *
   * @throws BytesPastEndError if a short last page carries bytes other than
   * zeros past the end of the file (they would be lost)
   */
  write(pages: Uint32Array, buf: Uint8Array): void {
    if (buf.length < pages.length * PAGE_SIZE) throw new RangeError("Page buffer too small");
    const result = native().gw_ram_write(this.#handle("write"), pages, pages.length, buf);
    if (result === -EFBIG) throw new BytesPastEndError(this);
    check(result, `Cannot write ${pages.length} pages to "${this.path}"`);
  }

  /** Makes pages [first, first + count) zero by punching a hole. */
  punch(first: number, count: number): void {
    check(
      native().gw_ram_punch(this.#handle("write"), first, count),
      `Cannot zero pages ${first}..${first + count} of "${this.path}"`,
    );
  }

  /** Passes an access hint to the kernel (posix_fadvise). */
  advise(advice: RamAdvice): void {
    check(
      native().gw_ram_advise(this.#handle("advise"), ADVICE[advice]),
      `Cannot advise on "${this.path}"`,
    );
  }

  /**
   * Maps the file for the scans that read pages where they lie (later
   * reads, see `ContentIndex.scan`'s `bytes`) and has the kernel fill in
   * the mapping for pages [first, first + count) that are in memory, then
   * reads a byte of each, so that the next such scan pays no page faults
   * (some 10 ms per 100 MB on one VM, 30-40 ms on one whose hypervisor
   * shadows page tables, where the kernel's fill is not enough): a paused
   * guest's final round is one, and its time is downtime. On a thread of
   * the runtime's, while the caller goes on: no scan of this file may run
   * until it ends (closing the file waits for it). A file that cannot be
   * mapped is left alone: its scans read it with pread.
   *
   * @throws RangeError when the range is past the file's pages
   */
  async premap(first = 0, count: number = this.pages - first): Promise<void> {
    if (
      !(Number.isInteger(first) && Number.isInteger(count) && first >= 0 && count >= 0) ||
      first + count > this.pages
    ) {
      throw new RangeError(
        `Cannot map pages ${first}..${first + count} of "${this.path}": it has ${this.pages}`,
      );
    }
    const call = native().gw_ram_premap(this.#handle("premap"), first, count);
    // Chained: each premap holds the handle until it ends, whatever its order with the others.
    const ended = Promise.allSettled([this.#premapping, call]).then(() => {});
    this.#premapping = ended;
    const result = await call;
    if (this.#premapping === ended) this.#premapping = undefined;
    if (result !== -ENOMEM) check(result, `Cannot map "${this.path}"`);
  }

  /**
   * What fstat says now. Done in C because Deno's own file API asks for
   * `--allow-all` on any path under /dev (where guest RAM lives).
   */
  stat(): RamFileStat {
    const out = new BigUint64Array(6);
    check(native().gw_ram_stat(this.#handle("stat"), out), `Cannot stat "${this.path}"`);
    return {
      dev: out[0]!,
      ino: out[1]!,
      size: Number(out[2]),
      blocks: Number(out[3]),
      mode: Number(out[4]),
      ownedByThisUser: out[5] === 1n,
    };
  }

  /**
   * Closes the file; safe to call twice. A premap still on its thread keeps
   * the C handle until it ends (the file reads as closed at once).
   */
  close(): void {
    let handle: Deno.PointerObject;
    try {
      handle = this.#handle("close");
    } catch {
      return;
    }
    setRamHandle(this, undefined);
    if (this.#premapping) {
      this.#premapping.finally(() => native().gw_ram_close(handle)).catch(() => {});
    } else {
      native().gw_ram_close(handle);
    }
  }

  /** Closes it, for `using`: see {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Pages to copy within a target, each from a page that holds the same content. */
export interface PageCopies {
  /** File holding each page's source. */
  sources: RamFile[];
  /** Page number of each source in its file. */
  sourcePages: Uint32Array;
  /** Page each copy goes to in the target file. */
  targetPages: Uint32Array;
  /** Hash each source page must have (XXH3-64 with `seed`). */
  hashes: BigUint64Array;
}

/**
 * Copies pages into `target` from other pages (of any open files), each
 * checked against its hash before it is written. Source pages are read
 * with pread.
 *
 * Requires `--allow-ffi`.
 *
 * @throws Error naming a source page whose bytes do not match their hash;
 * BytesPastEndError for a short last page with bytes other than zeros past the end
 */
export function copyPages(target: RamFile, copies: PageCopies, seed: bigint): void {
  const count = copies.targetPages.length;
  if (
    copies.sources.length < count || copies.sourcePages.length < count ||
    copies.hashes.length < count
  ) {
    throw new RangeError("Each copy needs a source file, a source page and a hash");
  }
  const handles = new BigUint64Array(count);
  for (let i = 0; i < count; i++) {
    handles[i] = BigInt(Deno.UnsafePointer.value(ramHandle(copies.sources[i]!, "copy pages")));
  }
  const bad = new Uint32Array(1);
  const result = native().gw_ram_copy(
    handles,
    copies.sourcePages,
    ramHandle(target, `write "${target.path}"`),
    copies.targetPages,
    count,
    seed,
    copies.hashes,
    bad,
  );
  if (result === -EFBIG) throw new BytesPastEndError(target);
  if (result === -EBADMSG) {
    const i = bad[0]!;
    throw new Error(
      `Cannot copy page ${copies.sourcePages[i]} of "${
        copies.sources[i]!.path
      }": it does not match its content's hash`,
    );
  }
  checkRamResult(result, `Cannot copy ${count} pages into "${target.path}"`, copies.sources);
}

/**
 * A page for the short last page of a file carried bytes other than zeros
 * past the file's end: the file never grows, so they would be lost while
 * the page's hash still counted them.
 */
export class BytesPastEndError extends Error {
  override name = "BytesPastEndError";
  /** The file's size in bytes. */
  readonly size: number;

  constructor(file: RamFile) {
    super(
      `Cannot write the last page of "${file.path}" (${file.size} bytes): the page has bytes ` +
        "other than zeros past the end of the file",
    );
    this.size = file.size;
  }
}

/** errno of "file too large": a short last page with bytes past the end (BytesPastEndError). */
const EFBIG = constants.errno.EFBIG;
/** errno of "bad message": a page that does not match its hash. */
const EBADMSG = constants.errno.EBADMSG;
/** errno the library answers when a file it reads is shorter than when it was opened. */
const ESTALE = constants.errno.ESTALE;
/** errno of premap's file that cannot be mapped (its scans read it with pread). */
const ENOMEM = constants.errno.ENOMEM;

/**
 * As {@linkcode check}, and for ESTALE (a RAM file shrank since it was
 * opened: its lost pages must not read as zeros) an error naming which of
 * `files` shrank, from what size to what size.
 *
 * @param files the files the call read
 */
export function checkRamResult(result: number, what: string, files: Iterable<RamFile>): number {
  if (result === -ESTALE) {
    for (const file of new Set(files)) {
      const now = file.stat().size;
      if (now < file.size) {
        throw new NativeError(
          `Cannot read guest RAM "${file.path}": the file shrank from ${file.size} to ${now} bytes`,
          "ESTALE",
        );
      }
    }
  }
  return check(result, what);
}

function checkBuffers(count: number, buf: Uint8Array, perPage: Uint8Array): void {
  if (buf.length < count * PAGE_SIZE) throw new RangeError("Page buffer too small");
  if (perPage.length < count) throw new RangeError("Per-page buffer too small");
}
