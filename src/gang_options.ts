/**
 * What a QEMU gang migration takes and leaves (`migrateQemuGang` in
 * gang_migration.ts): the target it goes to, its options, its result.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import type { Destination } from "./qemu/destination.ts";
import type { TransferGangOptions } from "./transfer/transfer_gang.ts";
import type { FinalRounds, QemuGangReport } from "./gang_report.ts";
import type { SwitchOverPair } from "./switchover/switch_over.ts";
import type { DiskCopyOptions } from "./switchover/disk_copy.ts";
import type { ThrottleSteps } from "./plan/convergence.ts";

/**
 * Where a gang goes: what the migration needs of a target host (see
 * `RemoteTarget`, a target agent on another host, and `LocalTarget`, one
 * started on this machine).
 */
export interface MigrationTarget {
  /**
   * Starts a destination for every source guest, of the same machine,
   * waiting for its device state; its RAM file is where the receiver
   * writes that guest's pages.
   *
   * @throws Error when the target refuses the gang or a destination cannot start (then none runs)
   */
  prepareDestinations(sources: readonly QemuGuest[]): Promise<Destination[]>;
  /** Opens the connection the gang's RAM travels over (after {@linkcode prepareDestinations}). */
  connect(): Promise<Deno.Conn>;
  /** The token the RAM connection presents, if any (after {@linkcode prepareDestinations}). */
  readonly token?: string;
  /** Stops these destinations and removes their files: their guests stay at the source. */
  discard(destinations: readonly Destination[]): Promise<void>;
  /** Ends the gang at the target: destinations that run are kept, the target is free for another gang. */
  release(): Promise<void>;
}

/** Options of {@linkcode migrateQemuGang}. */
export interface QemuGangOptions extends
  Omit<
    TransferGangOptions,
    "pause" | "resume" | "pauseGuest" | "guestFinished" | "ramFinal" | "slowGuests"
  > {
  /**
   * Auto-converge: when the live rounds stop shrinking, throttle the busy
   * guests (cgroup CPU quotas, a share of the CPU each used; root only)
   * step by step up to `max`, rather than end the rounds with a large
   * final round. Each guest
   * runs at full speed again once paused for its final round, and all do
   * when the migration ends. Unless `maxRounds` is given, the round limit
   * grows by one round per throttle step. Needs `--allow-all` (see
   * `CpuThrottle`).
   * Default: never throttle.
   */
  throttle?: ThrottleSteps;
  /** Called with the paused, verified gang just before the switch-over (tests compare RAM here). */
  beforeSwitchOver?: (pairs: readonly SwitchOverPair[]) => Promise<void> | void;
  /** Progress of the steps, in words. */
  onStep?: (step: string) => void;
  /**
   * Stops the migration (Ctrl-C in a script): it fails with the signal's
   * reason as it would for a lost target. Guests not yet handed to their
   * switch-over run at their sources again; a guest whose destination was
   * already asked to run stays at the target (the error names it).
   */
  signal?: AbortSignal;
  /** Time allowed for each QEMU step of the switch-over. Default 30 s. */
  switchOverTimeoutMs?: number;
  /** Limits of the disk copies (destinations without shared storage). */
  diskCopy?: DiskCopyOptions;
  /**
   * How the gang ends. "gang": every guest is paused for one final round
   * and they switch over together, once all of them are verified and every
   * destination is checked; each guest's downtime holds the whole gang's
   * final round (every page of the gang is re-read where the kernel has no
   * soft-dirty bits). "per-guest": one guest at a time is paused, finished
   * (its last pages sent, its digest verified) and switched over while the
   * others run on; a guest's downtime holds its own final round only, flat
   * in the gang's size, but for a moment the gang runs on both hosts, and a
   * failure after the first guest moved leaves the moved guests at the
   * target (the error names them). `beforeSwitchOver` is then called per
   * guest. Default "per-guest", or "gang" when disks are copied (their
   * mirrors complete with the gang paused; "per-guest" is refused then).
   */
  finalRounds?: FinalRounds;
}

/** What a migration leaves: the report and the destinations, running at the target. */
export interface QemuGangResult {
  /** What the migration did. */
  report: QemuGangReport;
  /** The destinations, in gang order. */
  destinations: Destination[];
}
