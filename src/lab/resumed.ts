/**
 * Did a migrated guest resume at the target, intact? Read from its
 * heartbeat: the destination's counter goes on from the source's last
 * value (no reboot), and a checksum check of its random blob made at the
 * target, after the migration, is ok. A guest whose kernel crashed
 * (an Oops, BUG or panic in its serial log) is reported as such.
 *
 * @module
 */
import type { QemuGuest } from "../qemu/guest.ts";
import { parseHeartbeats, readHeartbeat } from "../qemu/heartbeat.ts";
import { type KernelCrash, readKernelCrash } from "../qemu/kernel_crash.ts";
import { errorMessage } from "../_errors.ts";

/** What {@linkcode checkResumed} found. */
export interface ResumeCheck {
  /** The guest. */
  name: string;
  /** True when it went on at the target with its checksum ok. */
  resumed: boolean;
  /** What was seen, in words. */
  detail: string;
  /** The kernel crash report found in its serial log, at the target or else at the source. */
  kernelCrash?: KernelCrash & { where: "target" | "source" };
}

/** Most heartbeats to wait for a checksum check made at the target. */
const MAX_BEATS_FOR_A_CHECK = 20;

/**
 * Checks that a guest resumed at its destination: its first heartbeat
 * there is the source's last + 1 (or + 2: a line may be torn between the
 * two serial logs), its log there has no second `gangway-ready` (a
 * reboot), a checksum check done at the target says ok, and its kernel
 * reported no crash there. A guest whose kernel crashed (at the target,
 * or on the source before it moved) is reported with the report's first
 * lines rather than as a missing heartbeat.
 *
 * Requires `--allow-read` (the serial logs).
 *
 * @param sourceSerialLog The source's serial log (its QEMU has stopped)
 * @param destination The destination guest, running
 * @param timeoutMs Time for each heartbeat awaited. Default 15000 ms
 * @returns The verdict; never throws for a guest that did not resume
 *
 * @example
 * ```ts
 * import { checkResumed } from "./resumed.ts";
 * import type { QemuGuest } from "../qemu/guest.ts";
 *
 * declare const source: QemuGuest, destination: QemuGuest;
 * const check = await checkResumed(source.serialLog, destination);
 * if (!check.resumed) console.error(`${check.name}: ${check.detail}`);
 * ```
 */
export async function checkResumed(
  sourceSerialLog: string,
  destination: QemuGuest,
  timeoutMs = 15_000,
): Promise<ResumeCheck> {
  const check = await checkHeartbeat(sourceSerialLog, destination, timeoutMs);
  // A crash at the target fails even a guest that still beats: its memory
  // is damaged. One on the source explains a guest that never went on.
  const target = await readKernelCrash(destination.serialLog).catch(() => undefined);
  const source = check.resumed || target
    ? undefined
    : await readKernelCrash(sourceSerialLog).catch(() => undefined);
  const crash = target
    ? { ...target, where: "target" as const }
    : source && { ...source, where: "source" as const };
  if (!crash) return check;
  const place = crash.where === "target" ? "at the target" : "on the source, before it moved";
  return {
    name: check.name,
    resumed: false,
    detail: `its kernel crashed ${place} (${crash.kind}): ${crash.lines.slice(0, 2).join(" | ")}`,
    kernelCrash: crash,
  };
}

/** The heartbeat and checksum part of {@linkcode checkResumed}. */
async function checkHeartbeat(
  sourceSerialLog: string,
  destination: QemuGuest,
  timeoutMs: number,
): Promise<ResumeCheck> {
  const name = destination.name;
  const verdict = (resumed: boolean, detail: string) => ({ name, resumed, detail });
  try {
    const last = await readHeartbeat(sourceSerialLog);
    if (!last) return verdict(false, "the source never printed a heartbeat");
    let beat = await destination.waitForHeartbeat({ after: last.counter, timeoutMs });
    const log = await Deno.readTextFile(destination.serialLog);
    if (log.includes("gangway-ready")) return verdict(false, "it rebooted at the target");
    const first = parseHeartbeats(log)[0]!;
    if (first.counter !== last.counter + 1 && first.counter !== last.counter + 2) {
      return verdict(false, `its heartbeat went from ${last.counter} to ${first.counter}`);
    }
    for (let beats = 0; beat.checks <= last.checks; beats++) {
      if (beats >= MAX_BEATS_FOR_A_CHECK) return verdict(false, "no checksum check at the target");
      beat = await destination.waitForHeartbeat({ after: beat.counter, timeoutMs });
    }
    if (beat.checksum !== "ok") return verdict(false, `checksum ${beat.checksum} at the target`);
    return verdict(
      true,
      `heartbeat ${last.counter} -> ${first.counter}, checksum check ${beat.checks} ok`,
    );
  } catch (error) {
    return verdict(false, errorMessage(error));
  }
}
