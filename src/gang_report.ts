/**
 * What a QEMU gang migration reports (`migrateQemuGang`): each guest's
 * downtime and bytes, the transfer, and when each phase began.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import type { RamBackend } from "./qemu/ram_backend.ts";
import type { SwitchOverResult } from "./switchover/switch_over.ts";
import type { DowntimeParts } from "./qemu/downtime_parts.ts";
import type { MigrationReport } from "./transfer/transfer_gang.ts";
import type { RoundReport } from "./transfer/sender_options.ts";

/** What happened to one guest. */
export interface QemuGuestReport {
  /** The guest's name. */
  name: string;
  /** Guest RAM in bytes. */
  ramBytes: number;
  /** Bytes on the wire for this guest's pages (references to other guests' contents are small). */
  bytesOnWire: number;
  /** From its source pausing to its destination running (0 if it did not switch over). */
  downtimeMs: number;
  /** What that downtime was made of (when it switched over). */
  downtimeParts?: DowntimeParts;
  /** When its destination ran, on the migrating process's `performance.now()` clock. */
  runningAt?: number;
  /** Device state QEMU sent. */
  deviceStateBytes: number;
  /** True when it runs at the target (paused there, with `paused`). */
  migrated: boolean;
  /**
   * True when it was paused before the migration began: it moved paused
   * (it runs when someone resumes it, QMP `cont`), or stays paused at the
   * source. Absent for a guest that was running.
   */
  paused?: true;
  /** Why not, when it did not. */
  error?: string;
}

/** When each phase of a gang migration began, in seconds from its start. */
export interface GangTimeline {
  /** The destinations wait: the rounds begin. */
  transfer: number;
  /** The gang is being paused for the final round (the destinations were found ready). */
  paused: number;
  /** Every guest is paused: the final round begins. */
  finalRound: number;
  /** The final round is verified: device state starts to move. */
  switchOver: number;
  /** The last destination runs. */
  running: number;
}

/** How a gang migration ends: see `QemuGangOptions.finalRounds` (gang_migration.ts). */
export type FinalRounds = "gang" | "per-guest";

/** What a QEMU gang migration did. */
export interface QemuGangReport {
  /** Each guest, in gang order. */
  guests: QemuGuestReport[];
  /**
   * The RAM transfer (rounds, bytes, verification). Its `verified` is of
   * the RAM: the target held every guest's RAM exactly as the final round
   * ended. Whether a guest then runs there is its own `migrated` (a switch-
   * over that fails after the RAM was verified leaves it at the source).
   */
  transfer: MigrationReport;
  /** How the gang ended: guest by guest, or the whole gang paused at once. */
  finalRounds: FinalRounds;
  /** From the start to the last destination running. */
  seconds: number;
  /** Where the time went. */
  timeline: GangTimeline;
}

/** One guest's report from its switch-over. */
export function guestReport(
  result: SwitchOverResult,
  ramBytes: number,
  bytesOnWire: number,
  paused: boolean,
): QemuGuestReport {
  const report: QemuGuestReport = result.ok
    ? {
      name: result.name,
      ramBytes,
      bytesOnWire,
      downtimeMs: result.downtimeMs,
      downtimeParts: result.downtimeParts,
      runningAt: result.runningAt,
      deviceStateBytes: result.deviceStateBytes,
      migrated: true,
    }
    : {
      name: result.name,
      ramBytes,
      bytesOnWire,
      downtimeMs: 0,
      deviceStateBytes: 0,
      migrated: false,
      error: result.error,
    };
  return paused ? { ...report, paused } : report;
}

/**
 * The transfer's report when it failed after some guests were finished:
 * the rounds it reported, nothing verified as a whole (each guest that
 * moved was verified before it ran).
 */
export function unfinishedTransfer(
  sources: readonly QemuGuest[],
  rams: readonly RamBackend[],
  rounds: readonly RoundReport[],
): MigrationReport {
  const bytes = rams.map((ram) => ram.size);
  const sum = (key: "bytesOnWire" | "seconds") => rounds.reduce((total, r) => total + r[key], 0);
  return {
    guests: sources.map((s, i) => ({ name: s.name, bytes: bytes[i]! })),
    rounds: [...rounds],
    bytesOnWire: sum("bytesOnWire"),
    guestBytesOnWire: sources.map((_, guest) =>
      rounds.reduce((total, r) => total + (r.guestBytesOnWire[guest] ?? 0), 0)
    ),
    guestBytes: bytes.reduce((a, b) => a + b, 0),
    seconds: sum("seconds"),
    verified: false,
    digests: [],
    pausedSeconds: 0,
    verifySeconds: 0,
    dirtyTracking: "rescan",
    compression: { mode: "auto", frames: 0, rawBytes: 0, compressedBytes: 0 },
  };
}
