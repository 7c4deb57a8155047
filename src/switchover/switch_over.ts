/**
 * The switch-over: with every guest of the gang paused and its RAM verified
 * at the target, QEMU moves each guest's device state (RAM skipped with
 * `x-ignore-shared`), the destination is checked and started, and the
 * source can go.
 *
 * @module
 */
import type { QemuGuest } from "../qemu/guest.ts";
import { DeviceStateMigration } from "../qemu/migration.ts";

/** A source guest and the destination taking it over. */
export interface SwitchOverPair {
  source: QemuGuest;
  destination: QemuGuest;
  /** Where the source sends its device state (default: a unix socket of the destination). */
  uri?: string;
  /** Where the destination listens for it (default: `uri`). */
  incomingUri?: string;
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
  }
  | { name: string; ok: false; error: string };

/** Options of {@linkcode switchOverGang}. */
export interface SwitchOverOptions {
  /** Time allowed for each QEMU step. Default 30 s. */
  timeoutMs?: number;
}

/**
 * Checks that every destination is alive and waiting for its incoming
 * migration: a gang is switched over only when all of it can be.
 *
 * @throws Error naming the destinations that cannot take their guest
 */
export async function checkDestinationsReady(destinations: readonly QemuGuest[]): Promise<void> {
  const problems: string[] = [];
  await Promise.all(destinations.map(async (guest) => {
    if (!guest.alive) {
      problems.push(`"${guest.name}" exited`);
      return;
    }
    try {
      const { status } = await guest.status();
      if (status !== "inmigrate") {
        problems.push(`"${guest.name}" is ${status}, not waiting for a migration`);
      }
    } catch (error) {
      problems.push(`"${guest.name}": ${error instanceof Error ? error.message : error}`);
    }
  }));
  if (problems.length > 0) {
    throw new Error(`Cannot switch the gang over: destination ${problems.join(", ")}`);
  }
}

/**
 * Switches every pair over at once. A guest whose switch-over fails keeps
 * running at its source (QEMU's migration is cancelled and the source
 * resumed); the others are not held back by it.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP, migration sockets).
 */
export async function switchOverGang(
  pairs: readonly SwitchOverPair[],
  options: SwitchOverOptions = {},
): Promise<SwitchOverResult[]> {
  return await Promise.all(pairs.map(async (pair): Promise<SwitchOverResult> => {
    const name = pair.source.name;
    try {
      const migration = await DeviceStateMigration.start(pair.source, pair.destination, {
        uri: pair.uri,
        incomingUri: pair.incomingUri,
        resumeSourceOnFailure: true,
        timeoutMs: options.timeoutMs,
      });
      const result = await migration.finish();
      return {
        name,
        ok: true,
        downtimeMs: result.downtimeMs,
        switchoverMs: result.switchoverMs,
        deviceStateBytes: result.transferredBytes,
      };
    } catch (error) {
      return { name, ok: false, error: error instanceof Error ? error.message : String(error) };
    }
  }));
}
