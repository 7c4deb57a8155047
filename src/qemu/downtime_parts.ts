/**
 * What a device-state-only migration (`DeviceStateMigration` in
 * `device_state.ts`) measured, and where its guest's downtime went.
 *
 * @module
 */
/** What a device-state migration measured. */
export interface DeviceStateMigrationResult {
  /** Source guest name. */
  source: string;
  /** Destination guest name. */
  destination: string;
  /** From the source's vCPUs stopping to the destination's running: the guest's downtime. */
  downtimeMs: number;
  /** From the device state starting to move (migrate or migrate-continue) to the destination running. */
  switchoverMs: number;
  /** From `DeviceStateMigration.start()` to the destination running. */
  totalMs: number;
  /** Bytes QEMU sent (device state and RAM blocks that are not shared). */
  transferredBytes: number;
  /** The downtime QEMU reports on the source (its own view; includes the paused copy). */
  qemuDowntimeMs?: number;
  /** When the destination ran, on this process's `performance.now()` clock. */
  runningAt: number;
  /** What the downtime was made of. */
  downtimeParts: DowntimeParts;
}

/**
 * Where a guest's downtime went, in ms: consecutive parts from its source
 * pausing to its destination running (their sum is the downtime).
 */
export interface DowntimeParts {
  /** Paused before the switch-over started (gangway's final round, until applied at the target). */
  beforeSwitchOverMs: number;
  /** Source checked, destination listening, `migrate` sent. */
  setupMs: number;
  /** The device state moved: until the source's migration completed. */
  deviceStateMs: number;
  /** Then waiting for the caller's `runAfter` (gangway: the RAM's verification). */
  verifyWaitMs: number;
  /** The destination checked loaded and started (`cont`). */
  runMs: number;
}

/**
 * When a destination started to run, on this process's clock: its answer
 * came at `answeredAt` and says it was read `sinceRunMs` after `cont`
 * returned (what the destination did after that, and the answer's way
 * back, are not downtime). Never before `askedAt`, when it was asked to
 * run; a `sinceRunMs` that is missing or not a positive number counts as 0.
 */
export function ranAt(askedAt: number, answeredAt: number, sinceRunMs: unknown): number {
  const since = typeof sinceRunMs === "number" && sinceRunMs > 0 ? sinceRunMs : 0;
  return answeredAt - Math.min(since, answeredAt - askedAt);
}

/** Consecutive parts between marks on the `performance.now()` clock, none before `pausedAt`. */
export function downtimeParts(
  pausedAt: number,
  marks: {
    started: number;
    migrating: number;
    completed: number;
    verified: number;
    running: number;
  },
): DowntimeParts {
  const at = (mark: number) => Math.max(mark, pausedAt);
  return {
    beforeSwitchOverMs: at(marks.started) - pausedAt,
    setupMs: at(marks.migrating) - at(marks.started),
    deviceStateMs: at(marks.completed) - at(marks.migrating),
    verifyWaitMs: at(marks.verified) - at(marks.completed),
    runMs: at(marks.running) - at(marks.verified),
  };
}
