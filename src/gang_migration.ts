/**
 * Live gang migration of QEMU guests, from top to bottom:
 *
 *   1. find each source guest's RAM file (QMP);
 *   2. start a destination for each at the target, waiting for its device state;
 *   3. preparation scan of the whole gang's RAM, while the guests run;
 *   4. live pre-copy rounds to the target's receiver, which writes into the
 *      destinations' RAM files; each distinct page content crosses once;
 *   5. pause every guest, final round, verification of every guest's RAM digest;
 *   6. switch-over: QEMU moves only device state, each destination is
 *      checked and started, each source quits and its RAM file is removed.
 *
 * A failure before the switch-over tears the destinations down and resumes
 * every source: no guest is ever left paused or lost.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import type { RamBackend } from "./qemu/ram_backend.ts";
import { softDirtySupported } from "./native/pagemap.ts";
import {
  type DirtyTracker,
  mappingAddress,
  pagesOf,
  rescanEverything,
  SoftDirtyTracker,
} from "./plan/dirty_tracking.ts";
import { Gang } from "./scan/gang.ts";
import { randomSeed } from "./transfer/seed.ts";
import {
  migrateGang,
  type MigrateGangOptions,
  type MigrationReport,
} from "./transfer/migrate_gang.ts";
import {
  checkDestinationsReady,
  switchOverGang,
  type SwitchOverPair,
  type SwitchOverResult,
} from "./switchover/switch_over.ts";

/** Where a gang goes: what the migration needs of a target (see LocalTarget). */
export interface MigrationTarget {
  /** Starts a destination for a source guest; its RAM file has the guest's name in the receiver's directory. */
  startDestination(
    source: QemuGuest,
  ): Promise<{ guest: QemuGuest; uri?: string; incomingUri?: string }>;
  /** Opens a connection to the target's receiver. */
  connect(): Promise<Deno.Conn>;
  /** The token the receiver requires, if any. */
  readonly token?: string;
}

/** Options of {@linkcode migrateQemuGang}. */
export interface QemuGangOptions extends Omit<MigrateGangOptions, "pause" | "resume"> {
  /** Called with the paused, verified gang just before the switch-over (tests compare RAM here). */
  beforeSwitchOver?: (pairs: readonly SwitchOverPair[]) => Promise<void> | void;
  /** Progress of the steps, in words. */
  onStep?: (step: string) => void;
  /** Time allowed for each QEMU step of the switch-over. Default 30 s. */
  switchOverTimeoutMs?: number;
}

/** What happened to one guest. */
export interface QemuGuestReport {
  name: string;
  /** Guest RAM in bytes. */
  ramBytes: number;
  /** Bytes on the wire for this guest's pages (references to other guests' contents are small). */
  bytesOnWire: number;
  /** From its source pausing to its destination running (0 if it did not switch over). */
  downtimeMs: number;
  /** Device state QEMU sent. */
  deviceStateBytes: number;
  /** True when it runs at the target. */
  migrated: boolean;
  /** Why not, when it did not. */
  error?: string;
}

/** What a QEMU gang migration did. */
export interface QemuGangReport {
  guests: QemuGuestReport[];
  /** The RAM transfer (rounds, bytes, verification). */
  transfer: MigrationReport;
  /** From the start to the last destination running. */
  seconds: number;
}

/** What a migration leaves: the report and the destination guests (running, for the caller to own). */
export interface QemuGangResult {
  report: QemuGangReport;
  destinations: QemuGuest[];
}

/**
 * Migrates running QEMU guests to a target as one gang.
 *
 * On success every source has quit and its RAM file is gone, and the
 * destinations run. If a guest's own switch-over fails, that guest keeps
 * running at its source and the error lists it; the others move on.
 *
 * Requires `--allow-ffi`, `--allow-net`, `--allow-read`, `--allow-write`, `--allow-run`.
 *
 * @throws Error when the gang cannot be moved; every source then runs again
 */
export async function migrateQemuGang(
  sources: readonly QemuGuest[],
  target: MigrationTarget,
  options: QemuGangOptions = {},
): Promise<QemuGangResult> {
  const started = performance.now();
  const step = (text: string) => options.onStep?.(text);

  step("Finding the guests' RAM");
  const rams = await Promise.all(sources.map((s) => s.ramBackend()));

  step("Starting the destinations");
  const pairs: SwitchOverPair[] = [];
  const destinations: QemuGuest[] = [];
  let transfer: MigrationReport;
  let paused = false;
  const resumeAll = async () => {
    await Promise.all(sources.map((s) => s.resume()));
    paused = false;
  };
  try {
    for (const source of sources) {
      const destination = await target.startDestination(source);
      destinations.push(destination.guest);
      pairs.push({ source, ...destination, destination: destination.guest });
    }

    step("Scanning and sending the gang's RAM");
    const dirtyTracker = await trackerFor(sources, rams);
    using gang = Gang.open(sources.map((s, i) => ({ name: s.name, path: rams[i]!.path })), {
      seed: randomSeed(),
    });
    transfer = await migrateGang(gang, target.connect(), {
      dirtyTracker,
      token: target.token,
      ...options,
      pause: async () => {
        step("Pausing the gang for the final round");
        await Promise.all(sources.map((s) => s.pause()));
        paused = true;
      },
      resume: resumeAll,
    });
    await options.beforeSwitchOver?.(pairs);
    await checkDestinationsReady(destinations);
  } catch (error) {
    if (paused) await resumeAll().catch(() => {});
    await Promise.all(destinations.map((d) => d.close({ removeRam: true })));
    throw error;
  }

  step("Switching over");
  const results = await switchOverGang(pairs, { timeoutMs: options.switchOverTimeoutMs });
  const running: QemuGuest[] = [];
  for (const [i, result] of results.entries()) {
    if (result.ok) {
      running.push(destinations[i]!);
      await sources[i]!.close({ removeRam: true });
    } else {
      await destinations[i]!.close({ removeRam: true });
    }
  }
  const report: QemuGangReport = {
    guests: results.map((result, i) =>
      guestReport(result, rams[i]!.size, transfer.guestBytesOnWire[i] ?? 0)
    ),
    transfer,
    seconds: (performance.now() - started) / 1000,
  };
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) {
    const detail = failed.map((r) => `${r.name}: ${r.ok ? "" : r.error}`).join("; ");
    throw Object.assign(
      new Error(
        `Cannot switch over ${failed.length} of ${results.length} guests (they run at the source): ${detail}`,
      ),
      { report, destinations: running },
    );
  }
  return { report, destinations: running };
}

/**
 * Soft-dirty tracking of QEMU's own mappings of the guests' RAM where the
 * kernel has it; otherwise every round re-reads every page.
 */
async function trackerFor(
  sources: readonly QemuGuest[],
  rams: readonly RamBackend[],
): Promise<DirtyTracker> {
  if (!softDirtySupported()) return rescanEverything;
  const mapped = await Promise.all(sources.map(async (source, i) => ({
    pid: source.pid,
    address: await mappingAddress(source.pid, rams[i]!.path),
    pages: pagesOf(rams[i]!.size),
  })));
  return new SoftDirtyTracker(mapped);
}

function guestReport(
  result: SwitchOverResult,
  ramBytes: number,
  bytesOnWire: number,
): QemuGuestReport {
  return result.ok
    ? {
      name: result.name,
      ramBytes,
      bytesOnWire,
      downtimeMs: result.downtimeMs,
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
}
