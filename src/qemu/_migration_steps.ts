/**
 * The QMP steps both kinds of migration share: capabilities, parameters,
 * starting both ends, waiting on `query-migrate`, checking and starting the
 * destination, and putting the source back after a failure.
 *
 * @module
 */
import { join } from "node:path";
import { delay, withTimeout } from "../_delay.ts";
import type { QemuGuest } from "./guest.ts";
import { errorMessage } from "../_errors.ts";

/** What `query-migrate` returns (the fields gangway reads). */
export interface MigrationInfo {
  /** Absent before the first migration. */
  status?: string;
  "total-time"?: number;
  downtime?: number;
  "setup-time"?: number;
  "error-desc"?: string;
  ram?: {
    transferred: number;
    total: number;
    duplicate: number;
    normal: number;
    "normal-bytes": number;
    mbps: number;
    "dirty-sync-count": number;
    "multifd-bytes"?: number;
    "precopy-bytes"?: number;
    "downtime-bytes"?: number;
  };
}

/** Statuses after which a migration is over, one way or the other. */
const FINISHED = new Set(["completed", "failed", "cancelled"]);
/** Statuses of a migration still in progress on the source. */
const ACTIVE = new Set([
  "setup",
  "active",
  "pre-switchover",
  "device",
  "cancelling",
  "wait-unplug",
]);

/** Turns migration capabilities on or off. */
export async function setCapabilities(
  guest: QemuGuest,
  capabilities: Record<string, boolean>,
): Promise<void> {
  await guest.qmp.execute("migrate-set-capabilities", {
    capabilities: Object.entries(capabilities).map(([capability, state]) => ({
      capability,
      state,
    })),
  });
}

/** Sets migration parameters (names as QEMU spells them). */
export async function setParameters(
  guest: QemuGuest,
  parameters: Record<string, unknown>,
): Promise<void> {
  if (Object.keys(parameters).length > 0) {
    await guest.qmp.execute("migrate-set-parameters", parameters);
  }
}

/** Runs `query-migrate`, its answer awaited `timeoutMs` (default: the QMP client's 10 s). */
export async function queryMigrate(guest: QemuGuest, timeoutMs?: number): Promise<MigrationInfo> {
  return await guest.qmp.execute<MigrationInfo>("query-migrate", undefined, { timeoutMs });
}

/** The default migration address: a unix socket in the destination's run directory. */
export function defaultUri(destination: QemuGuest): string {
  return `unix:${join(destination.runDir, `${destination.name}.migrate`)}`;
}

/** Removes the socket file of a `unix:` migration address; other addresses leave nothing. */
export async function removeUnixSocket(uri: string): Promise<void> {
  if (!uri.startsWith("unix:")) return;
  await Deno.remove(uri.slice("unix:".length)).catch(() => {});
}

/**
 * Makes the destination listen on `incomingUri`, then makes the source
 * connect to `uri` and send.
 */
export async function startBothEnds(
  source: QemuGuest,
  destination: QemuGuest,
  uri: string,
  incomingUri: string,
): Promise<void> {
  await destination.qmp.execute("migrate-incoming", { uri: incomingUri });
  await source.qmp.execute("migrate", { uri });
}

/**
 * Waits until the guest's migration reaches one of `wanted`, waking on
 * MIGRATION events (capability `events`) and polling in case none come.
 *
 * @throws Error when the migration ends otherwise, or in `timeoutMs`
 */
export async function waitForStatus(
  guest: QemuGuest,
  wanted: readonly string[],
  timeoutMs: number,
): Promise<MigrationInfo> {
  const deadline = performance.now() + timeoutMs;
  let changed = false; // an event came while query-migrate was in flight
  let wake: (() => void) | undefined;
  const off = guest.qmp.on("MIGRATION", () => {
    changed = true;
    wake?.();
  });
  try {
    while (true) {
      changed = false;
      // A QEMU on a host whose cores are all busy may take over the default 10 s to answer (24
      // guests on two cores did): it has as long as the wait has left.
      const info = await queryMigrate(guest, Math.max(1000, deadline - performance.now()));
      const status = info.status ?? "none";
      if (wanted.includes(status)) return info;
      if (FINISHED.has(status)) {
        const why = info["error-desc"] ? `: ${info["error-desc"]}` : "";
        throw new Error(`migration of "${guest.name}" ended as ${status}${why}`);
      }
      if (performance.now() > deadline) {
        throw new Error(`migration of "${guest.name}" still ${status} after ${timeoutMs} ms`);
      }
      if (changed) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    off();
  }
}

/**
 * The source's `query-migrate` once its figures are final: QEMU sets
 * "completed" before it computes total-time and downtime, so a query right
 * after the status change can read zeros.
 */
export async function finalInfo(source: QemuGuest): Promise<MigrationInfo> {
  let info = await queryMigrate(source);
  for (let tries = 0; !info["total-time"] && tries < 40; tries++) {
    await delay(25);
    info = await queryMigrate(source);
  }
  return info;
}

/**
 * Checks that the destination loaded everything: its own `query-migrate`
 * says completed and it is alive and paused (it runs with `-S`). The
 * source saying "completed" proves nothing: a destination that fails to
 * load the device state exits while the source reports success.
 */
export async function checkDestination(destination: QemuGuest, timeoutMs: number): Promise<void> {
  // Both asked at once (QMP answers in order, so the status is read after the migration's): a
  // destination that loaded already, as it mostly has, is checked in one round trip, which is
  // downtime (3-4 ms on a busy host).
  let [{ status: migration }, { status }] = await Promise.all([
    queryMigrate(destination, timeoutMs),
    destination.status(timeoutMs),
  ]);
  if (migration !== "completed") {
    await waitForStatus(destination, ["completed"], timeoutMs);
    ({ status } = await destination.status(timeoutMs));
  }
  if (status !== "paused") {
    throw new Error(`destination "${destination.name}" is ${status} after loading, not paused`);
  }
}

/**
 * After a failed migration: cancels what is still running on the source,
 * waits for it to settle, and resumes the source when `resume` is set and
 * QEMU has not resumed it itself.
 *
 * @returns a note on the source's state, for the error message
 */
export async function recoverSource(source: QemuGuest, resume: boolean): Promise<string> {
  if (!source.alive) return `source "${source.name}" has exited`;
  try {
    const { status = "none" } = await queryMigrate(source);
    if (ACTIVE.has(status)) {
      await source.qmp.execute("migrate_cancel");
      await waitForStatus(source, ["failed", "cancelled", "completed"], 10_000).catch(() => {});
    }
    const state = await source.status();
    if (state.running) return `source "${source.name}" is running`;
    if (!resume) {
      // Its device state went out: QEMU keeps it stopped as `postmigrate`, which `cont` runs.
      if (state.status === "postmigrate") {
        return `source "${source.name}" stays paused (QEMU: postmigrate; QMP \`cont\` runs it)`;
      }
      return `source "${source.name}" stays ${state.status}`;
    }
    await source.resume();
    return `source "${source.name}" resumed`;
  } catch (error) {
    const why = errorMessage(error);
    return `source "${source.name}" could not be resumed: ${why}`;
  }
}

/** The end of a QEMU's log when it has exited (why it died), else "". */
export async function exitNote(guest: QemuGuest): Promise<string> {
  // A QMP error often arrives a moment before the process is reaped.
  await withTimeout(guest.exited, 500, () => new Error("alive")).catch(() => {});
  if (guest.alive) return "";
  const tail = (await guest.qemuLogTail()).trim().split("\n").slice(-3).join(" | ");
  return ` (QEMU of "${guest.name}" exited${tail ? `: ${tail}` : ""})`;
}
