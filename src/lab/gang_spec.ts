/**
 * What guests a lab run migrates, and how it boots them on the source host.
 *
 * @module
 */
import type { WorkloadMode } from "../qemu/_guest_init.ts";
import { QemuGuest } from "../qemu/guest.ts";
import { readKernelCrash } from "../qemu/kernel_crash.ts";
import type { GuestRam } from "./measurement.ts";
import type { LabSession } from "./session.ts";
import { delay, secondsBetween } from "./_time.ts";

/** The gang of one measurement: the same for every method compared. */
export interface GangSpec {
  /** Number of guests. */
  guests: number;
  /** RAM of each guest in MiB. */
  memoryMiB: number;
  /** Seconds the booted guests are left running before the migration. */
  idleSeconds: number;
  /** What the guests run: heartbeat and checksum only, or also rewriting 8 MiB. */
  workload: WorkloadMode;
  /** Extra guest kernel arguments (e.g. "nokaslr"); none by default, so KASLR is on. */
  kernelArgs: string[];
  /** The QEMU program of every guest. Default `qemu-system-x86_64`. */
  qemuBinary?: string;
  /** QEMU's accelerator. Default "tcg". */
  accelerator?: string;
}

/** Options of {@linkcode bootGang}. */
export interface BootOptions {
  /**
   * Where the guests keep their RAM: "file" (a shared file in the session's
   * RAM directory, which gangway needs) or "anonymous" (QEMU's default, for
   * QEMU's own migration). Default "file".
   */
  ram?: GuestRam;
}

/** A gang booted on the source host. */
export interface BootedGang {
  /** The guests, running. */
  guests: QemuGuest[];
  /** From starting the first QEMU to the last guest's first heartbeat. */
  bootSeconds: number;
}

/** Time a guest gets to print its first heartbeat: TCG on a busy host is slow. */
function bootTimeoutMs(spec: GangSpec): number {
  return 60_000 + 15_000 * spec.guests + 20 * spec.memoryMiB;
}

/**
 * Boots a gang on the source host, all guests at once from the session's
 * image, waits until every one has printed its first heartbeat, then
 * leaves them running for `spec.idleSeconds`. Each guest's RAM file (with
 * the file backend) is in the session's RAM directory, its QMP socket and
 * logs in its run directory.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-read`, `--allow-write`.
 *
 * @param session The lab session (it tracks the guests)
 * @param spec How many guests, how big, what they run, for how long
 * @param tag A short word in the guests' names (one per method)
 * @param options Where the guests keep their RAM
 * @returns The running gang
 * @throws Error when a guest does not boot; the others are then closed
 *
 * @example
 * ```ts
 * const gang = await bootGang(lab, { guests: 2, memoryMiB: 256, idleSeconds: 10, workload: "idle", kernelArgs: [] }, "g");
 * ```
 */
export async function bootGang(
  session: LabSession,
  spec: GangSpec,
  tag: string,
  options: BootOptions = {},
): Promise<BootedGang> {
  if (session.closed) throw new Error("Cannot boot the gang: the lab session is closed");
  const started = performance.now();
  const names = Array.from({ length: spec.guests }, (_, i) => session.guestName(tag, i + 1));
  const launched = await Promise.allSettled(names.map((name) =>
    QemuGuest.start({
      name,
      memoryMiB: spec.memoryMiB,
      image: session.image,
      workload: { mode: spec.workload },
      kernelArgs: spec.kernelArgs,
      ...(spec.qemuBinary ? { qemuBinary: spec.qemuBinary } : {}),
      ...(spec.accelerator ? { accelerator: spec.accelerator } : {}),
      anonymousRam: options.ram === "anonymous",
      ramPath: session.ramPath("source", name),
      runDir: session.hostRunDir("source"),
      commandPrefix: session.prefix("source"),
    }).then((guest) => session.track(guest))
  ));
  const guests = launched.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  try {
    const failed = launched.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
    const timeoutMs = bootTimeoutMs(spec);
    await Promise.all(guests.map((guest) => guest.waitUntilBooted(timeoutMs)));
  } catch (error) {
    const why = await whyGuestsDied(guests);
    await closeGuests(session, guests);
    throw new Error(
      `Cannot boot the gang: ${error instanceof Error ? error.message : error}${why}`,
      { cause: error },
    );
  }
  const bootSeconds = secondsBetween(started, performance.now());
  session.say(`booted ${spec.guests} in ${bootSeconds.toFixed(1)} s; idle ${spec.idleSeconds} s`);
  await delay(spec.idleSeconds * 1000);
  return { guests, bootSeconds };
}

/** For the guests whose QEMU exited: their kernel's crash report, or QEMU's last words. */
async function whyGuestsDied(guests: readonly QemuGuest[]): Promise<string> {
  const notes = await Promise.all(
    guests.filter((guest) => !guest.alive).map(async (guest) => {
      const crash = await readKernelCrash(guest.serialLog).catch(() => undefined);
      if (crash) {
        return `${guest.name}'s kernel crashed (${crash.kind}): ${crash.lines.join(" | ")}`;
      }
      const tail = (await guest.qemuLogTail().catch(() => "")).trim().split("\n").slice(-2);
      return `${guest.name}'s QEMU exited${tail.join("") ? `: ${tail.join(" | ")}` : ""}`;
    }),
  );
  return notes.map((note) => `; ${note}`).join("");
}

/**
 * Quits guests, removes their RAM files, and forgets them.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-write`.
 */
export async function closeGuests(
  session: LabSession,
  guests: readonly QemuGuest[],
): Promise<void> {
  await Promise.all(guests.map(async (guest) => {
    await guest.close({ removeRam: true });
    session.forget(guest);
  }));
}
