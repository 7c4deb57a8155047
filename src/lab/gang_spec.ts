/**
 * What guests a lab run migrates, and how it boots them on the source host.
 *
 * @module
 */
import { join } from "node:path";
import type { WorkloadMode } from "../qemu/_guest_init.ts";
import type { ImageName } from "../qemu/guest_image.ts";
import { QemuGuest } from "../qemu/guest.ts";
import { readKernelCrash } from "../qemu/kernel_crash.ts";
import type { GuestRam } from "./measurement.ts";
import { waitForWorkload } from "../qemu/heartbeat.ts";
import type { LabSession } from "./session.ts";
import { delay } from "../_delay.ts";
import { secondsBetween } from "./_time.ts";
import { SerialRecorder } from "./serial_recorder.ts";
import { errorMessage } from "../_errors.ts";

/** The gang of one measurement: the same for every method compared. */
export interface GangSpec {
  /** Number of guests. */
  guests: number;
  /** RAM of each guest in MiB. */
  memoryMiB: number;
  /** Seconds the booted guests are left running before the migration. */
  idleSeconds: number;
  /**
   * What the guests run besides the heartbeat: nothing (`idle`), rewriting
   * 8 MiB (`busy`), pgbench (`pgbench`, debian-db) or wrk against nginx
   * (`web`, debian-web).
   */
  workload: WorkloadMode;
  /**
   * The images, cycled across the guests: guest i boots `images[i % n]`
   * (a mixed gang when there are several). Default `["busybox"]`.
   */
  images?: ImageName[];
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
  /**
   * RAM files on the session's tmpfs of huge pages (`hugePageRamDir`),
   * where one can be mounted; else in its RAM directory. Default false.
   */
  hugePageFiles?: boolean;
}

/** A gang booted on the source host. */
export interface BootedGang {
  /** The guests, running. */
  guests: QemuGuest[];
  /** From starting the first QEMU to the last guest's first heartbeat. */
  bootSeconds: number;
  /**
   * For `pgbench` and `web`: the guests' workload lines from the moment
   * the load ran in every guest (the idle time before the migration
   * included), for the application's view. Stop it when done.
   */
  recorder?: SerialRecorder;
}

/** The image of each guest of a gang, in order. */
export function gangImages(spec: GangSpec): ImageName[] {
  const images = spec.images ?? ["busybox"];
  if (images.length === 0) throw new Error("Cannot boot the gang: no image named");
  return Array.from({ length: spec.guests }, (_, i) => images[i % images.length]!);
}

/**
 * Time a guest gets to print its first heartbeat: TCG on a busy host is
 * slow, and systemd on a disk far slower than busybox (30-45 s alone on
 * this 2-core machine; a Debian guest of a mixed gang once took more than
 * 125 s while other QEMUs and an image build shared the cores).
 */
function bootTimeoutMs(spec: GangSpec): number {
  const perGuest = gangImages(spec).reduce(
    (sum, image) => sum + (image === "busybox" ? 15_000 : 90_000),
    0,
  );
  return 60_000 + perGuest + 20 * spec.memoryMiB;
}

/** Time the workloads get to start after the boot (pgbench fills its tables first). */
function workloadTimeoutMs(spec: GangSpec): number {
  return 120_000 + 60_000 * spec.guests;
}

/**
 * Boots a gang on the source host, all guests at once from the session's
 * images (cycled across the guests), waits until every one has printed its
 * first heartbeat (and, for pgbench and web, until the load runs), then
 * leaves them running for `spec.idleSeconds`. Each guest's RAM file (with
 * the file backend) is in the session's RAM directory, its disk overlay
 * (Debian images) in the session's disk directory, its QMP socket and logs
 * in its run directory. For `pgbench` and `web` the gang comes with a
 * running `recorder` of the workloads' lines (from the start of the idle
 * time): the caller stops it (`measureMethod` does).
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
 * import { bootGang } from "./gang_spec.ts";
 * import { LabSession } from "./session.ts";
 *
 * await using lab = await LabSession.open();
 * const gang = await bootGang(lab, {
 *   guests: 2,
 *   memoryMiB: 256,
 *   idleSeconds: 10,
 *   workload: "idle",
 *   kernelArgs: [],
 *   images: ["debian", "busybox"],
 * }, "g");
 * console.log(gang.guests.map((guest) => guest.name));
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
  const images = gangImages(spec);
  const names = images.map((_, i) => session.guestName(tag, i + 1));
  const ramDir = options.hugePageFiles && options.ram !== "anonymous"
    ? await session.hugePageRamDir()
    : undefined;
  const launched = await Promise.allSettled(names.map(async (name, i) =>
    session.track(
      await QemuGuest.start({
        name,
        memoryMiB: spec.memoryMiB,
        image: await session.guestImage(images[i]!),
        workload: { mode: spec.workload },
        kernelArgs: spec.kernelArgs,
        ...(spec.qemuBinary ? { qemuBinary: spec.qemuBinary } : {}),
        ...(spec.accelerator ? { accelerator: spec.accelerator } : {}),
        anonymousRam: options.ram === "anonymous",
        ramPath: ramDir ? join(ramDir, name) : session.ramPath("source", name),
        diskPath: session.diskPath(name),
        runDir: session.hostRunDir("source"),
        commandPrefix: session.prefix("source"),
        signal: session.signal,
      }),
    )
  ));
  const guests = launched.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  try {
    const failed = launched.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
    const timeoutMs = bootTimeoutMs(spec);
    await Promise.all(guests.map((guest) => guest.waitUntilBooted(timeoutMs)));
    if (reportsWork(spec.workload)) {
      session.say(`booted; waiting for ${spec.workload} to run in every guest`);
      const abortReason = (guest: QemuGuest) => () =>
        guest.alive ? undefined : `QEMU of guest "${guest.name}" exited`;
      await Promise.all(guests.map((guest) =>
        waitForWorkload(guest.serialLog, {
          timeoutMs: workloadTimeoutMs(spec),
          abortReason: abortReason(guest),
        })
      ));
    }
  } catch (error) {
    const why = await whyGuestsDied(guests);
    await closeGuests(session, guests);
    throw new Error(
      `Cannot boot the gang: ${errorMessage(error)}${why}`,
      { cause: error },
    );
  }
  const bootSeconds = secondsBetween(started, performance.now());
  let recorder: SerialRecorder | undefined;
  if (reportsWork(spec.workload)) {
    recorder = SerialRecorder.start();
    for (const guest of guests) recorder.follow(guest.name, guest.serialLog, { fromEnd: true });
  }
  session.say(`booted ${spec.guests} in ${bootSeconds.toFixed(1)} s; idle ${spec.idleSeconds} s`);
  await delay(spec.idleSeconds * 1000);
  return { guests, bootSeconds, ...(recorder ? { recorder } : {}) };
}

/** The workloads that report their completed work on the console (the application's view). */
export function reportsWork(workload: WorkloadMode): boolean {
  return workload === "pgbench" || workload === "web";
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
 * Quits guests, removes their RAM files and disk overlays, and forgets them.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-write`.
 */
export async function closeGuests(
  session: LabSession,
  guests: readonly QemuGuest[],
): Promise<void> {
  await Promise.all(guests.map(async (guest) => {
    await guest.close({ removeRam: true, removeDisk: true });
    session.forget(guest);
  }));
}
