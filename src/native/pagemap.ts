/**
 * Which pages a process wrote: soft-dirty bits through /proc/PID/pagemap.
 * Where the kernel lacks soft-dirty tracking, the reads throw a
 * NativeError with code EOPNOTSUPP instead of returning clean-looking bits.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/** Per-page flags in the arrays returned below. */
export const PagemapFlag = {
  Present: 1,
  Swapped: 2,
  SoftDirty: 4,
} as const;

/**
 * Whether soft-dirty tracking works on this kernel (probed once).
 *
 * Requires `--allow-ffi`.
 */
export function softDirtySupported(): boolean {
  return check(native().gw_soft_dirty_supported(), "Cannot probe soft-dirty tracking") === 1;
}

/** Whether the PAGEMAP_SCAN ioctl (Linux 6.7+) works here (probed once). */
export function pagemapScanSupported(): boolean {
  return check(native().gw_pagemap_scan_supported(), "Cannot probe PAGEMAP_SCAN") === 1;
}

/** Clears the soft-dirty bits of every page of a process (0 = this one). */
export function clearSoftDirty(pid: number): void {
  check(native().gw_soft_dirty_clear(pid), `Cannot clear soft-dirty bits of process ${pid}`);
}

/** Options of {@linkcode readPageFlags}. */
export interface ReadPageFlagsOptions {
  /** Flags wanted, a mask of {@linkcode PagemapFlag}. Default: all. */
  want?: number;
  /** Use the PAGEMAP_SCAN ioctl instead of reading /proc/PID/pagemap. */
  ioctl?: boolean;
}

/**
 * Reads the flags of `pages` pages from address `addr` in process `pid`.
 *
 * @returns one byte of {@linkcode PagemapFlag} bits per page
 */
export function readPageFlags(
  pid: number,
  addr: bigint,
  pages: number,
  options: ReadPageFlagsOptions = {},
): Uint8Array {
  const want = options.want ?? (PagemapFlag.Present | PagemapFlag.Swapped | PagemapFlag.SoftDirty);
  const flags = new Uint8Array(pages);
  const read = options.ioctl ? native().gw_pagemap_scan : native().gw_pagemap_read;
  check(
    read(pid, addr, pages, flags, want),
    `Cannot read page flags of process ${pid} at 0x${addr.toString(16)}`,
  );
  return flags;
}
