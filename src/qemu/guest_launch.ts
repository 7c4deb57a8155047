/**
 * Launching a QEMU guest: its options, the machine and command line they
 * make, its files, and QEMU started until its QMP socket answers. The
 * running guest is {@linkcode QemuGuest} (`guest.ts`).
 *
 * @module
 */
import { join } from "node:path";
import { delay } from "../_delay.ts";
import { QemuProcess } from "./_qemu_process.ts";
import type { GuestImage } from "./guest_image.ts";
import { type Workload, workloadArgs } from "./_guest_init.ts";
import { createOverlay } from "./_overlay.ts";
import { QmpClient } from "./qmp.ts";
import { qemuArgs, type QemuDisk, type QemuMachine } from "./qemu_args.ts";
import { errorMessage } from "../_errors.ts";
import { normalPriorityPrefix } from "../cpu_share.ts";

/** Options of {@linkcode QemuGuest.start}. */
export interface QemuGuestOptions {
  /** Guest name: letters, digits, `_.+-`. */
  name: string;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** Kernel and initramfs (and base disk), e.g. from `ensureGuestImage()`. */
  image: GuestImage;
  /**
   * The guest's own copy-on-write overlay over the image's base disk (an
   * image with a disk only), made at start. Default: next to the RAM file,
   * `RAMPATH.qcow2`. A destination on shared storage opens the same file.
   */
  diskPath?: string;
  /** What the test guest runs (kernel arguments read by its heartbeat). Default idle. */
  workload?: Workload;
  /** More kernel arguments (e.g. `nokaslr`), after `console=ttyS0 panic=-1 no_timer_check`. */
  kernelArgs?: string[];
  /** Memory backend id. Default `gangway-ram`. */
  backendId?: string;
  /** RAM file. Default `/dev/shm/gangway-NAME`. */
  ramPath?: string;
  /**
   * Directory of the QMP socket, the serial log and QEMU's log; a given one
   * keeps the logs after `close()`. Default: a new temporary directory,
   * removed by `close()`.
   */
  runDir?: string;
  /** Command that runs QEMU, e.g. `["ip", "netns", "exec", "ns1"]`; it must exec QEMU, not fork it. */
  commandPrefix?: string[];
  /** More QEMU arguments, the same for source and destination. */
  extraArgs?: string[];
  /** Virtual CPUs. Default 1. */
  cpus?: number;
  /** QEMU accelerator. Default `tcg`. */
  accelerator?: string;
  /** QEMU program. Default `qemu-system-x86_64`. */
  qemuBinary?: string;
  /**
   * RAM in QEMU's default anonymous memory, no file at `ramPath`: for
   * QEMU's own migration only (see {@linkcode QemuMachine.anonymousRam}).
   * Default false.
   */
  anonymousRam?: boolean;
  /**
   * Remove an existing file at `ramPath` (and at `diskPath`) first
   * (otherwise that is an error). Default false.
   */
  replaceRamFile?: boolean;
  /** Time allowed for QEMU to open its QMP socket. Default 10000 ms. */
  startTimeoutMs?: number;
  /**
   * Once aborted, no QEMU is spawned: the start fails instead (a lab that
   * is closing on Ctrl-C would otherwise leave one it spawned after its
   * last look for them).
   */
  signal?: AbortSignal;
}

/** Options of {@linkcode QemuGuest.startDestination}. */
export interface DestinationOptions {
  /** Destination guest name. */
  name: string;
  /** RAM file; any existing file there is removed first. Default `/dev/shm/gangway-NAME`. */
  ramPath?: string;
  /** As in {@linkcode QemuGuestOptions.runDir}. */
  runDir?: string;
  /** As in {@linkcode QemuGuestOptions.commandPrefix}. */
  commandPrefix?: string[];
  /** As in {@linkcode QemuGuestOptions.startTimeoutMs}. */
  startTimeoutMs?: number;
  /** As in {@linkcode QemuGuestOptions.signal}. */
  signal?: AbortSignal;
}

/**
 * The kernel arguments every gangway guest gets. `no_timer_check`: under
 * TCG on a busy host the kernel's boot-time check of the IO-APIC timer
 * can miss its ticks and panic ("IO-APIC + timer doesn't work!"), which
 * lab runs of many guests at once on 2 cores did.
 */
const BASE_KERNEL_ARGS = ["console=ttyS0", "panic=-1", "no_timer_check"];
/** Longest unix socket path (sun_path is 108 bytes with the terminating zero). */
const MAX_SOCKET_PATH = 107;

/** One QEMU to launch: its name, files and whether it waits for an incoming migration. */
export interface LaunchInstance {
  name: string;
  ramPath?: string;
  runDir?: string;
  commandPrefix?: string[];
  startTimeoutMs?: number;
  signal?: AbortSignal;
  incoming: boolean;
}

/** Where a guest's files are. */
export interface GuestPaths {
  /** The RAM file. */
  ramPath: string;
  /** Directory of the QMP socket and logs. */
  runDir: string;
  /** The serial console log. */
  serialLog: string;
  /** The QMP socket. */
  qmpPath: string;
  /** True when the run directory was made here (and is removed on close). */
  ownsRunDir: boolean;
}

/**
 * The machine of a guest that boots (a migration source), from its
 * options: the workload checked against the image, no stale RAM file or
 * overlay in the way (or removed when asked), the overlay made.
 *
 * @returns the machine, the RAM file, and the overlay made for it (to
 * remove if QEMU fails to start)
 */
export async function sourceMachine(
  options: QemuGuestOptions,
): Promise<{ machine: QemuMachine; ramPath: string; overlay?: string }> {
  const { name, image } = options;
  const mode = options.workload?.mode ?? "idle";
  const workloads = image.workloads ?? ["idle", "busy"];
  if (!workloads.includes(mode)) {
    throw new Error(
      `Cannot start guest "${name}": image ${image.name ?? image.kernel} cannot run the ` +
        `${mode} workload (it runs ${workloads.join(", ")})`,
    );
  }
  const ramPath = options.ramPath ?? defaultRamPath(name);
  const diskPath = options.diskPath ?? `${ramPath}.qcow2`;
  const files = { "RAM file": ramPath, ...image.disk ? { "disk overlay": diskPath } : {} };
  for (const [what, path] of Object.entries(files)) {
    if (options.replaceRamFile) await removeFile(path);
    else await refuseExisting(name, what, path);
  }
  const disks: QemuDisk[] = [];
  if (image.disk) {
    await createOverlay(diskPath, image.disk);
    disks.push({ path: diskPath, format: "qcow2", base: image.disk });
  }
  const machine: QemuMachine = {
    memoryMiB: options.memoryMiB,
    backendId: options.backendId ?? "gangway-ram",
    cpus: options.cpus ?? 1,
    accelerator: options.accelerator ?? "tcg",
    image,
    kernelArgs: [
      ...BASE_KERNEL_ARGS,
      ...image.kernelArgs ?? [],
      ...workloadArgs(options.workload),
      ...options.kernelArgs ?? [],
    ],
    ...disks.length > 0 ? { disks } : {},
    extraArgs: options.extraArgs ?? [],
    qemuBinary: options.qemuBinary ?? "qemu-system-x86_64",
    ...(options.anonymousRam ? { anonymousRam: true } : {}),
  };
  return { machine, ramPath, ...image.disk ? { overlay: diskPath } : {} };
}

/**
 * Starts QEMU for a machine and connects to its QMP socket: the run
 * directory made when none is given, stale sockets and logs removed.
 * On failure nothing of it is left (QEMU killed, files it made removed).
 *
 * @throws Error naming the guest when QEMU fails to start or its QMP socket does not answer
 */
export async function launchQemu(
  machine: QemuMachine,
  instance: LaunchInstance,
): Promise<{ process: QemuProcess; qmp: QmpClient; paths: GuestPaths }> {
  const { name } = instance;
  const ownsRunDir = instance.runDir === undefined;
  const runDir = instance.runDir ?? await Deno.makeTempDir({ prefix: `gangway-${name}-` });
  const qmpPath = join(runDir, `${name}.qmp`);
  const paths = {
    ramPath: instance.ramPath ?? defaultRamPath(name),
    runDir,
    serialLog: join(runDir, `${name}.serial.log`),
    qmpPath,
    ownsRunDir,
  };
  let process: QemuProcess | undefined;
  try {
    if (qmpPath.length > MAX_SOCKET_PATH) {
      throw new Error(`Cannot start guest "${name}": QMP socket path "${qmpPath}" is too long`);
    }
    await Deno.mkdir(runDir, { recursive: true });
    await removeFile(qmpPath);
    await removeFile(paths.serialLog);
    const args = qemuArgs(machine, { ...paths, name, qmpPath, incoming: instance.incoming });
    instance.signal?.throwIfAborted(); // in the same turn as the spawn: none after the abort
    process = QemuProcess.spawn(
      name,
      [
        // A guest runs at the priority of the host's other guests, not at a migration's.
        ...normalPriorityPrefix(),
        ...instance.commandPrefix ?? [],
        machine.qemuBinary,
        ...args,
      ],
      join(runDir, `${name}.qemu.log`),
    );
    const qmp = await connectQmp(name, qmpPath, process, instance.startTimeoutMs ?? 10_000);
    return { process, qmp, paths };
  } catch (error) {
    await process?.kill();
    // Any file there now was made by this QEMU: an existing one was refused or removed.
    if (process) await removeFile(paths.ramPath).catch(() => {});
    if (ownsRunDir) await Deno.remove(runDir, { recursive: true }).catch(() => {});
    throw error;
  }
}

/** Where a guest's RAM lives unless told otherwise. */
export function defaultRamPath(name: string): string {
  return `/dev/shm/gangway-${name}`;
}

/** Connects to a starting QEMU's QMP socket, retrying until it listens. */
async function connectQmp(
  name: string,
  path: string,
  process: QemuProcess,
  timeoutMs: number,
): Promise<QmpClient> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    if (process.exited) {
      // Its last words: why it exited (a bad option, a program that is not there).
      const last = (await process.logTail()).trim().split("\n").at(-1)?.trim();
      throw new Error(`Cannot start guest "${name}": QEMU exited${last ? `: ${last}` : ""}`);
    }
    try {
      return await QmpClient.connect(path, { guest: name });
    } catch (error) {
      if (performance.now() > deadline) {
        await process.kill();
        const why = errorMessage(error);
        throw new Error(`Cannot start guest "${name}": no QMP in ${timeoutMs} ms (${why})`);
      }
    }
    await delay(50);
  }
}

/** Removes a file; a missing file is fine. Works under /dev/shm with `--allow-write` only. */
export async function removeFile(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/**
 * Fails when the guest's RAM file (or overlay) exists. Deno cannot stat files under /dev without
 * --allow-all, so this asks `test -e`.
 */
async function refuseExisting(name: string, what: string, path: string): Promise<void> {
  const { success } = await new Deno.Command("test", { args: ["-e", path] }).output();
  if (success) {
    throw new Error(
      `Cannot start guest "${name}": ${what} "${path}" exists ` +
        "(another guest's, or stale: remove it or pass replaceRamFile)",
    );
  }
}
