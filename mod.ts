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
 * This module is the engine a script composes: open and scan a gang
 * (preparation), plan and send rounds to a receiver (transfer), verify. It
 * loads nothing of QEMU or the lab; those, and the rest, are subpath
 * exports, each importable alone:
 *
 * | subpath | what |
 * | --- | --- |
 * | `./scan` | the preparation scan only (the lightest entry) |
 * | `./transport` | TLS or plain TCP between sender and receiver, credentials |
 * | `./qemu` | QEMU control: guests, QMP, device-state and full QEMU migrations |
 * | `./switchover` | the switch-over of a gang whose RAM is at the target |
 * | `./gang-migration` | `migrateQemuGang`: a gang of QEMU guests moved from top to bottom |
 * | `./target` | the target host's agent, and the ways to reach or start one |
 * | `./lab` | the lab: gangway against QEMU between two network namespaces |
 *
 * Importing this module opens nothing and needs no permission; the C page
 * library is loaded on first use (`--allow-ffi`), and built into the
 * user's cache from the sources that came with the module graph when no
 * build is found (gcc and the -dev packages of xxHash and zstd).
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
 * @example Send a gang of RAM files nobody writes, in one pass
 * ```ts
 * import { Gang, transferGang, randomSeed } from "./mod.ts";
 *
 * using gang = Gang.open([{ name: "vm1", path: "/dev/shm/vm1" }], { seed: randomSeed() });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 7000 });
 * const report = await transferGang(gang, conn, { maxRounds: 1 });
 * console.log(`${report.bytesOnWire} bytes, verified: ${report.verified}`);
 * ```
 *
 * @module
 */

export * from "./src/scan/mod.ts";
export { randomSeed } from "./src/transfer/seed.ts";
export { softDirtySupported } from "./src/native/pagemap.ts";
export {
  type DirtyTracker,
  type MappedRam,
  mappingAddress,
  rescanEverything,
  SoftDirtyTracker,
} from "./src/plan/dirty_tracking.ts";
export { type Preparation, prepareGang, type PrepareOptions } from "./src/plan/preparation.ts";
export {
  type ConvergenceOptions,
  type LiveRoundsEnd,
  nextThrottle,
  type RoundSize,
  roundSize,
  shouldStopLiveRounds,
  type StopReason,
  type ThrottleSteps,
  whyStopLiveRounds,
} from "./src/plan/convergence.ts";
export type { RoundPages } from "./src/plan/round_planner.ts";
export { GangSender, TargetError } from "./src/transfer/sender.ts";
export {
  type RoundProgress,
  type RoundReport,
  type RoundTime,
  type SenderOptions,
} from "./src/transfer/sender_options.ts";
export {
  type Connection,
  type MigrationReport,
  transferGang,
  type TransferGangOptions,
} from "./src/transfer/transfer_gang.ts";
export type {
  CompressionEstimate,
  CompressionMode,
  CompressionReport,
} from "./src/transfer/compression_policy.ts";
export {
  type ReceivedGang,
  receiveGang,
  type ReceiverEvent,
  type ReceiverOptions,
  serveGangs,
  type ServeOptions,
} from "./src/transfer/receiver.ts";
export type { AcceptEvent } from "./src/transfer/accept_connections.ts";
export type { ByteStream } from "./src/transfer/frame_io.ts";
export type { WireGuest } from "./src/transfer/hello_frame.ts";
