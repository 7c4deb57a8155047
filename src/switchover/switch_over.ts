/**
 * The switch-over: with every guest of the gang paused and its RAM verified
 * at the target, QEMU moves each guest's device state (RAM skipped with
 * `x-ignore-shared`), the destination is checked and started, and the
 * source can go.
 *
 * @module
 */
import type { QemuGuest } from "../qemu/guest.ts";
import type { Destination } from "../qemu/destination.ts";
import { DeviceStateMigration } from "../qemu/device_state.ts";
import type { DowntimeParts } from "../qemu/downtime_parts.ts";
import { errorMessage } from "../_errors.ts";

/** A source guest and the destination taking it over. */
export interface SwitchOverPair {
  /** The source guest, paused at the switch-over. */
  source: QemuGuest;
  /** Its destination, waiting for the device state. */
  destination: Destination;
  /**
   * The guest was paused before the migration began: it moves paused (its
   * destination is not run), and a failure leaves its source paused.
   */
  movesPaused?: boolean;
}

/** How one guest's switch-over went. */
export type SwitchOverResult =
  | {
    name: string;
    ok: true;
    /** From the source stopping to the destination running. */
    downtimeMs: number;
    /** From the device state starting to move to the destination running. */
    switchoverMs: number;
    /** Device state QEMU sent. */
    deviceStateBytes: number;
    /** When the destination ran, on this process's `performance.now()` clock. */
    runningAt: number;
    /** What the downtime was made of. */
    downtimeParts: DowntimeParts;
  }
  | { name: string; ok: false; error: string };

/** Options of {@linkcode switchOverGang}. */
export interface SwitchOverOptions {
  /** Time allowed for each QEMU step. Default 30 s. */
  timeoutMs?: number;
  /**
   * The destinations run only once this resolves: the device state moves
   * meanwhile (the RAM must be final already; its verification may still
   * go on). If it rejects, every switch-over fails and its source resumes.
   */
  runAfter?: Promise<void>;
  /**
   * Every source was prepared (`DeviceStateMigration.prepareSource`) before
   * the caller paused it: only `migrate` is left to send.
   */
  sourcesPrepared?: boolean;
}

/**
 * Checks that every destination is alive and waiting for its incoming
 * migration (or, with `loading`, loading it or loaded and paused): a gang
 * is switched over only when all of it can be.
 *
 * @throws Error naming the destinations that cannot take their guest
 */
export async function checkDestinationsReady(
  destinations: readonly Destination[],
  options: { loading?: boolean } = {},
): Promise<void> {
  const problems: string[] = [];
  const ready = options.loading ? ["inmigrate", "paused"] : ["inmigrate"];
  await Promise.all(destinations.map(async (destination) => {
    try {
      const { status } = await destination.state();
      if (!ready.includes(status)) {
        problems.push(`"${destination.name}" is ${status}, not waiting for a migration`);
      }
    } catch (error) {
      problems.push(`"${destination.name}": ${errorMessage(error)}`);
    }
  }));
  if (problems.length > 0) {
    throw new Error(`Cannot switch the gang over: destination ${problems.join(", ")}`);
  }
}

/**
 * How often {@linkcode watchDestinations} asks each destination whether
 * its QEMU lives. Not every second: at 8 guests, asking every second (8
 * QMP queries a second at the agent, whose thread receives the RAM) went
 * with round 1 slower in 5 of 6 pairs (docs/lab-results/runs/ab-36).
 */
const WATCH_EVERY_MS = 5000;

/**
 * Aborts `stop` with an error naming the guest when a destination's QEMU
 * is found exited, asking each destination every `everyMs`, until
 * disposed of. Without it a destination that dies while the RAM moves is
 * noticed only when the gang pauses, which on a slow link may be minutes
 * later (the gang then stays at the source, as it does now, only sooner).
 * A destination that does not answer is not taken for dead: a lost target
 * fails the migration on its own.
 */
export function watchDestinations(
  destinations: readonly Destination[],
  stop: AbortController,
  everyMs = WATCH_EVERY_MS,
): Disposable {
  let watching = true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const look = async () => {
    const states = await Promise.all(
      destinations.map((destination) => destination.state().catch(() => undefined)),
    );
    const gone = destinations.find((_, i) => states[i]?.alive === false);
    if (gone) {
      const note = await gone.exitNote().catch(() => "");
      if (watching) {
        stop.abort(
          new Error(`The destination of guest "${gone.name}" exited during the migration${note}`),
        );
      }
    } else if (watching) {
      timer = setTimeout(look, everyMs);
    }
  };
  timer = setTimeout(look, everyMs);
  return {
    [Symbol.dispose]() {
      watching = false;
      clearTimeout(timer);
    },
  };
}

/**
 * Switches every pair over at once. A guest whose switch-over fails keeps
 * running at its source (QEMU's migration is cancelled and the source
 * resumed; one that moves paused stays paused); the others are not held
 * back by it.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP, migration sockets).
 */
export async function switchOverGang(
  pairs: readonly SwitchOverPair[],
  options: SwitchOverOptions = {},
): Promise<SwitchOverResult[]> {
  options.runAfter?.catch(() => {}); // each switch-over hears of its failure itself
  return await Promise.all(pairs.map(async (pair): Promise<SwitchOverResult> => {
    const name = pair.source.name;
    try {
      // A guest that moves paused has no downtime to save by moving its device state early: it
      // moves once its RAM is verified, so that a failure before that leaves its source as it
      // was (paused, not `postmigrate`, which no migration takes again).
      if (pair.movesPaused) await options.runAfter;
      const migration = await DeviceStateMigration.start(pair.source, pair.destination, {
        resumeSourceOnFailure: !pair.movesPaused,
        movesPaused: pair.movesPaused ?? false,
        timeoutMs: options.timeoutMs,
        sourcePrepared: options.sourcesPrepared,
      });
      const result = await migration.finish(options.runAfter);
      return {
        name,
        ok: true,
        downtimeMs: result.downtimeMs,
        switchoverMs: result.switchoverMs,
        deviceStateBytes: result.transferredBytes,
        runningAt: result.runningAt,
        downtimeParts: result.downtimeParts,
      };
    } catch (error) {
      return { name, ok: false, error: errorMessage(error) };
    }
  }));
}
