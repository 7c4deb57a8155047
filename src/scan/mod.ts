/**
 * The preparation phase alone: open a gang's RAM files, scan and index
 * every page, count what gang migration would send in full and what as a
 * reference. The lightest entry of gangway: it loads the C page library's
 * bindings and nothing of the network, QEMU or the lab.
 *
 * Importing this module opens nothing and needs no permission; scanning
 * needs `--allow-read` (the RAM files) and `--allow-ffi` (the C library,
 * built into the user's cache on first use when no build is found: see
 * `src/native/library.ts`).
 *
 * @example How much would gang migration save?
 * ```ts
 * import { Gang, scanGang } from "./mod.ts";
 *
 * using gang = Gang.open([
 *   { name: "vm1", path: "/dev/shm/vm1" },
 *   { name: "vm2", path: "/dev/shm/vm2" },
 * ]);
 * const { totals } = scanGang(gang);
 * console.log(`${totals.unique} distinct contents in ${totals.pages} pages`);
 * ```
 *
 * @module
 */
export { Gang, type GangGuest, type GangOptions, type GuestSpec } from "./gang.ts";
export {
  type GuestScanReport,
  type ScanCounts,
  scanGang,
  type ScanGangOptions,
  type ScanReport,
} from "./scan_gang.ts";
export {
  PAGE_SIZE,
  type RamAdvice,
  RamFile,
  type RamFileOptions,
  type RamFileStat,
} from "../native/ram_file.ts";
export {
  ContentIndex,
  type ContentIndexOptions,
  type FirstReads,
  type PageBytes,
  type ScanBuffers,
  scanBuffers,
  type ScanOptions,
} from "../native/content_index.ts";
export { NativeError } from "../native/errno.ts";
