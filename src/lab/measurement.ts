/**
 * What the lab measures of one migration method.
 *
 * @module
 */
import type { QemuGuest } from "../qemu/guest.ts";
import type { DowntimeParts } from "../qemu/downtime_parts.ts";
import type { CompressionReport } from "../transfer/compression_policy.ts";
import type { RoundTime } from "../transfer/sender_options.ts";
import type { LiveRoundsEnd } from "../plan/convergence.ts";
import type { ResumeCheck } from "./resumed.ts";
import type { ApplicationView } from "./app_view.ts";
import type { WarmedMemory } from "./warm_memory.ts";

/** The migration methods the lab compares. */
export const LAB_METHODS = ["gangway", "qemu", "qemu-zstd"] as const;

/**
 * A migration method: gangway's gang migration, QEMU's own live migration
 * with its default settings, or QEMU's with multifd and zstd compression.
 */
export type LabMethod = typeof LAB_METHODS[number];

/**
 * Where a gang's guests keep their RAM: in a shared tmpfs file (gangway
 * reads and writes it; it must), or in QEMU's default anonymous memory
 * (how users run guests for QEMU's own migration).
 */
export type GuestRam = "file" | "anonymous";

/** Where gangway's time went, from the gang runner's clock. */
export interface GangwayBreakdown {
  /** Finding the RAM files and starting the destinations (before the TMT starts). */
  setupSeconds: number;
  /** Opening the gang and the handshake: TMT start to the first round starting. */
  handshakeSeconds: number;
  /**
   * Each round: from its first page scanned to the target's acknowledgement,
   * and where that time went (absent in reports made before it was measured).
   */
  rounds: {
    round: number;
    final: boolean;
    seconds: number;
    bytesOnWire: number;
    time?: RoundTime;
    /** The guest (from 0) this round was the final one of, when guests end one at a time. */
    guest?: number;
    /** The guest (from 0) this live round caught up alone before its final round. */
    caughtUp?: number;
    /** The share of the guests' CPU time held back during this round (auto-converge). */
    throttle?: number;
  }[];
  /** Pausing the gang, final round, verification: the downtime before the switch-over. */
  pausedSeconds: number;
  /** Of those, stopping the guests (QMP `stop`). */
  pausingSeconds?: number;
  /** Of those, the verification (digests sent, the target's answer). */
  verifySeconds?: number;
  /** Device state moved and destinations started: to the last one running. */
  switchOverSeconds: number;
  /** What each guest's downtime was made of, in gang order (absent in older reports). */
  downtimeParts?: (DowntimeParts | undefined)[];
}

/** The gangway-only part of a measurement. */
export interface GangwayDetails {
  /** "tls" (gangway's default) or "tcp" (plain, as QEMU's migration). */
  transport: "tls" | "tcp";
  /** What gangway's compression of page data did (mode, frames, bytes before and after). */
  compression: CompressionReport;
  /** Rounds, the final one included. */
  rounds: number;
  /** The target found every guest's RAM identical to the source's. */
  verified: boolean;
  /** Why the live rounds ended ("converged", "round limit"...; absent in older reports). */
  liveRoundsEnded?: LiveRoundsEnd;
  /** Where the time went. */
  breakdown: GangwayBreakdown;
}

/** What a method did to a gang, before the guests are checked. */
export interface MigrationOutcome {
  /** Bytes the link carried from source to target during the migration (kernel counters). */
  bytesOnWire: number;
  /** Bytes the link carried back (acknowledgements, answers). */
  bytesBack: number;
  /** Bytes the method itself says it sent (QEMU: before compression). */
  toolBytes: number;
  /** First migration started to last guest running at the target. */
  tmtSeconds: number;
  /** Per guest, in gang order: source paused to destination running. */
  downtimeMs: number[];
  /** Each guest's source and destination, for the resume check and cleanup. */
  moved: { source: QemuGuest; destination: QemuGuest }[];
  /**
   * The TMT's start and end on the host's wall clock (ms since the epoch):
   * where the application's view cuts before, during and after.
   */
  window: { startMs: number; endMs: number };
  /** Gangway only. */
  gangway?: GangwayDetails;
}

/** What the lab measured of one method on one gang. */
export interface MethodResult extends Omit<MigrationOutcome, "moved" | "window"> {
  /** The method. */
  method: LabMethod;
  /** Guests that went on at the target with their checksum ok. */
  resumed: number;
  /** Each guest's resume check. */
  checks: ResumeCheck[];
  /** Time the gang took to boot (not part of any migration figure). */
  bootSeconds: number;
  /** Where the guests kept their RAM. */
  ram: GuestRam;
  /**
   * Whether the kernel had mapped any of their RAM at the source in huge
   * pages as the migration began (`hugePageBytes`: files on a tmpfs of huge
   * pages, huge_tmpfs.ts; anonymous RAM where the kernel gives it some).
   * Absent in reports made before it was recorded.
   */
  hugePages?: boolean;
  /** QEMU's version, from its QMP greeting (e.g. "7.2.22"). */
  qemuVersion: string;
  /** QEMU's accelerator ("tcg", "kvm"). */
  accelerator: string;
  /**
   * Processes the kernel's OOM killer killed on this host while the method
   * ran, boot and cleanup included (any process, not only the lab's); null
   * when the counter could not be read.
   */
  oomKills: number | null;
  /**
   * The host's 1-minute load average when the migration started. It
   * includes the gang's own boot (booting under TCG keeps the CPUs busy for
   * tens of seconds), so compare it between runs of the same size: far
   * above the usual, something else was running (a noisy run).
   */
  loadAverage: number;
  /** The memory made ready just before the migration, the same for every method (see warm_memory.ts). */
  warmedMemory: WarmedMemory;
  /** For `pgbench` and `web`: what the guests' workloads saw before, during and after. */
  application?: ApplicationView;
}
