/**
 * gangway: live gang migration of virtual machines.
 *
 * A gang of co-located guests shares many identical memory pages (same
 * kernel, same libraries, zero and poisoned pages). Gangway scans the
 * gang's RAM, indexes every distinct page content once for the whole gang
 * (each hash match confirmed byte by byte), and migrates the gang sending
 * each distinct content once: a page whose content was already sent, by
 * any guest, crosses the wire as a short reference.
 *
 * Importing this module opens nothing and needs no permission; the C page
 * library is loaded on first use (`--allow-ffi`).
 *
 * @example Preparation phase: how much would gang migration save?
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

export { Gang, type GangGuest, type GangOptions, type GuestSpec } from "./src/scan/gang.ts";
export {
  type GuestScanReport,
  rescanGuest,
  type ScanCounts,
  scanGang,
  type ScanGangOptions,
  type ScanReport,
} from "./src/scan/scan_gang.ts";
export {
  CHUNK_PAGES,
  scanChunks,
  type ScanChunksOptions,
  type ScannedChunk,
} from "./src/scan/scan_chunks.ts";
export {
  copyPages,
  PAGE_SIZE,
  type PageCopies,
  type RamAdvice,
  RamFile,
  type RamFileOptions,
  type RamFileStat,
} from "./src/native/ram_file.ts";
export {
  ContentId,
  ContentIndex,
  type ContentIndexOptions,
  PageKind,
  type ScanBuffers,
  scanBuffers,
  ScanStat,
} from "./src/native/content_index.ts";
export { hashPages, ramDigest, zeroPageHash } from "./src/native/hashing.ts";
export {
  clearSoftDirty,
  PagemapFlag,
  pagemapScanSupported,
  readPageFlags,
  type ReadPageFlagsOptions,
  softDirtySupported,
} from "./src/native/pagemap.ts";
export { NativeError } from "./src/native/errno.ts";
export * from "./src/qemu/mod.ts";
export {
  type GangTimeline,
  migrateQemuGang,
  type MigrationTarget,
  type QemuGangOptions,
  type QemuGangReport,
  type QemuGangResult,
  type QemuGuestReport,
  SwitchOverError,
} from "./src/gang_migration.ts";
export {
  checkDestinationsReady,
  switchOverGang,
  type SwitchOverOptions,
  type SwitchOverPair,
  type SwitchOverResult,
} from "./src/switchover/switch_over.ts";
export * from "./src/target/mod.ts";
export {
  GangSender,
  type RoundProgress,
  type RoundReport,
  type SenderOptions,
  TargetError,
} from "./src/transfer/sender.ts";
export {
  migrateGang,
  type MigrateGangOptions,
  type MigrationReport,
} from "./src/transfer/migrate_gang.ts";
export {
  type ReceivedGang,
  receiveGang,
  type ReceiverEvent,
  type ReceiverOptions,
  serveGangs,
  type ServeOptions,
} from "./src/transfer/receiver.ts";
export { randomSeed } from "./src/transfer/seed.ts";
export { type ConvergenceOptions, shouldStopLiveRounds } from "./src/plan/convergence.ts";
export { type RoundCounts, type RoundPages, RoundPlanner } from "./src/plan/round_planner.ts";
export {
  SyntheticGuest,
  type SyntheticGuestOptions,
  type WriteMix,
} from "./src/synthetic/synthetic_guest.ts";
export * from "./src/transport/mod.ts";
export {
  type DirtyTracker,
  type MappedRam,
  mappingAddress,
  rescanEverything,
  SoftDirtyTracker,
} from "./src/plan/dirty_tracking.ts";
