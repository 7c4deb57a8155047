/**
 * Disks copied live, without shared storage, the way `virsh migrate
 * --copy-storage-inc` does it with QEMU's own block layer:
 *
 *   1. the destination QEMU (waiting for its device state) opens a fresh
 *      qcow2 overlay over the same base image and exports it, writable, from
 *      an NBD server on a unix socket ({@linkcode exportDisks});
 *   2. the source QEMU adds an NBD client node reaching that export and
 *      mirrors the guest's overlay into it (`blockdev-mirror`, sync `top`:
 *      the base is already there) while the guest runs
 *      ({@linkcode DiskMirror.start});
 *   3. the mirror reports READY once it has caught up, and from then on
 *      copies each write as it comes ({@linkcode DiskMirror.waitReady});
 *   4. with the guest paused, `block-job-cancel` on the ready mirror writes
 *      what is left and ends the job with the target consistent (as libvirt
 *      does) ({@linkcode DiskMirror.complete});
 *   5. the destination ends its exports ({@linkcode endDiskExports}) before
 *      its device state loads and it runs: the guest's disk is then its own.
 *
 * Every QMP command is built here from a disk's index; nothing received
 * over a network names a node, a file or a socket.
 *
 * @module
 */
import type { QemuGuest } from "./guest.ts";
import { driveId } from "./qemu_args.ts";
import { delay } from "../_delay.ts";
import { errorMessage } from "../_errors.ts";

/** Makes the destination's fresh overlay over the base image (the same helper guests boot from). */
export { createOverlay } from "./_overlay.ts";

/** Where the source mirrors one disk: an NBD socket on its own host that leads to the export. */
export interface DiskTarget {
  /** The disk's index in the machine (`-drive id=diskN`, `/dev/vdX`). */
  index: number;
  /** A unix socket on the source's host that reaches the destination's NBD server. */
  socket: string;
}

/** The NBD export name of a copied disk: the same at both ends, made from its index. */
export function diskExportName(index: number): string {
  return `disk${index}`;
}

/** How often a job's state is asked for while waiting. */
const POLL_MS = 200;
/** The same, in the downtime (the guests are paused while the last writes cross). */
const FAST_POLL_MS = 10;

/**
 * Starts an NBD server on a unix socket of a destination waiting for its
 * device state, and exports the disks `indices` from it, writable. QEMU
 * activates an exported disk of an incoming guest; the guest's own device
 * takes it when the guest runs, after {@linkcode endDiskExports}.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP).
 */
export async function exportDisks(
  guest: QemuGuest,
  socket: string,
  indices: readonly number[],
): Promise<void> {
  await guest.qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: socket } } });
  const blocks = await guest.qmp.execute<{ device: string; inserted?: { "node-name"?: string } }[]>(
    "query-block",
  );
  for (const index of indices) {
    // block-export-add takes a node, not a drive: the drive's top node, as QEMU named it.
    const node = blocks.find((b) => b.device === driveId(index))?.inserted?.["node-name"];
    if (!node) {
      throw new Error(
        `Cannot export disk ${index} of guest "${guest.name}": QEMU has no such drive`,
      );
    }
    await guest.qmp.execute("block-export-add", {
      type: "nbd",
      id: diskExportName(index),
      "node-name": node,
      name: diskExportName(index),
      writable: true,
    });
  }
}

/**
 * Ends a destination's disk exports and its NBD server: the copies are
 * complete (the source's mirror ended), and the guest's own device must be
 * the disk's only writer when it runs.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP).
 *
 * @throws Error when an export is still there after `timeoutMs`
 */
export async function endDiskExports(
  guest: QemuGuest,
  indices: readonly number[],
  timeoutMs = 10_000,
): Promise<void> {
  const ids = new Set(indices.map(diskExportName));
  for (const id of ids) {
    // hard: a client still connected (a relay not yet closed) is cut off, not waited for.
    await guest.qmp.execute("block-export-del", { id, mode: "hard" }).catch(() => {});
  }
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = (await guest.qmp.execute<{ id: string }[]>("query-block-exports"))
      .filter((e) => ids.has(e.id));
    if (left.length === 0) break;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot end the disk exports of guest "${guest.name}": ${
          left.map((e) => e.id).join(", ")
        } still exported after ${timeoutMs / 1000} s`,
      );
    }
    await delay(FAST_POLL_MS);
  }
  await guest.qmp.execute("nbd-server-stop");
}

/** A job as `query-jobs` shows it. */
interface JobInfo {
  id: string;
  status: string;
  "current-progress": number;
  "total-progress": number;
  error?: string;
}

/** The mirrors of one source guest's disks. */
export class DiskMirror {
  /** The source guest. */
  readonly guest: QemuGuest;
  readonly #targets: readonly DiskTarget[];
  /** The jobs and NBD nodes made so far, to be removed on abort. */
  readonly #jobs: string[] = [];
  readonly #nodes: string[] = [];

  private constructor(guest: QemuGuest, targets: readonly DiskTarget[]) {
    this.guest = guest;
    this.#targets = targets;
  }

  /**
   * Adds an NBD client node for each target and starts mirroring the
   * guest's disk into it (its overlay only: the target has the base).
   *
   * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP, the sockets).
   *
   * @throws Error when a mirror cannot start; the ones started are then removed
   */
  static async start(guest: QemuGuest, targets: readonly DiskTarget[]): Promise<DiskMirror> {
    const mirror = new DiskMirror(guest, targets);
    try {
      for (const { index, socket } of targets) {
        const node = `gangway-nbd-${index}`;
        await guest.qmp.execute("blockdev-add", {
          driver: "nbd",
          "node-name": node,
          server: { type: "unix", path: socket },
          export: diskExportName(index),
        }, { timeoutMs: 30_000 });
        mirror.#nodes.push(node);
        const job = jobId(index);
        await guest.qmp.execute("blockdev-mirror", {
          "job-id": job,
          device: driveId(index),
          target: node,
          sync: "top",
          // Kept once it ends, so that its error can be read.
          "auto-dismiss": false,
        });
        mirror.#jobs.push(job);
      }
    } catch (error) {
      await mirror.abort();
      throw new Error(`Cannot copy the disks of guest "${guest.name}": ${errorMessage(error)}`, {
        cause: error,
      });
    }
    return mirror;
  }

  /**
   * Waits until every mirror has caught up (READY): from then on each write
   * of the guest is copied as it comes.
   *
   * @throws Error when a mirror failed, or has not caught up after `timeoutMs`
   */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const jobs = await this.#ownJobs();
      if (jobs.every((job) => job.status === "ready" || job.status === "standby")) return;
      const ended = jobs.find((job) => job.status === "concluded");
      if (ended) {
        throw new Error(
          `Cannot copy the disks of guest "${this.guest.name}": ${ended.id} ended before it caught up`,
        );
      }
      if (performance.now() > deadline) {
        const behind = jobs.filter((job) => job.status !== "ready").map((job) =>
          `${job.id} ${job.status}, ${job["current-progress"]} of ${job["total-progress"]} bytes`
        );
        throw new Error(
          `Cannot copy the disks of guest "${this.guest.name}": not caught up after ` +
            `${timeoutMs / 1000} s (${behind.join("; ")})`,
        );
      }
      await delay(POLL_MS);
    }
  }

  /**
   * With the guest paused: writes what is left and ends each mirror
   * (`block-job-cancel` on a ready mirror leaves the target consistent),
   * then removes the NBD client nodes.
   *
   * @throws Error when a mirror fails or does not end within `timeoutMs`
   */
  async complete(timeoutMs: number): Promise<void> {
    const qmp = this.guest.qmp;
    for (const job of this.#jobs) await qmp.execute("block-job-cancel", { device: job });
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const jobs = await this.#ownJobs();
      const open = jobs.filter((job) => job.status !== "concluded");
      if (open.length === 0) {
        for (const job of jobs) {
          if (job["current-progress"] !== job["total-progress"]) {
            throw new Error(
              `Cannot copy the disks of guest "${this.guest.name}": ${job.id} ended with ` +
                `${job["current-progress"]} of ${job["total-progress"]} bytes copied`,
            );
          }
        }
        break;
      }
      if (performance.now() > deadline) {
        throw new Error(
          `Cannot copy the disks of guest "${this.guest.name}": ${
            open.map((job) => job.id).join(", ")
          } did not end within ${timeoutMs / 1000} s`,
        );
      }
      await delay(FAST_POLL_MS);
    }
    await this.#removeAll();
  }

  /** Cancels the mirrors (the guest keeps its disk) and removes the NBD nodes; never throws. */
  async abort(): Promise<void> {
    const qmp = this.guest.qmp;
    for (const job of this.#jobs) {
      await qmp.execute("block-job-cancel", { device: job, force: true }).catch(() => {});
    }
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline) {
      const jobs = await this.#jobInfos().catch(() => []);
      if (jobs.every((job) => job.status === "concluded" || job.status === "null")) break;
      await delay(POLL_MS);
    }
    await this.#removeAll();
  }

  /** Dismisses the ended jobs and deletes the NBD nodes; what is gone already is skipped. */
  async #removeAll(): Promise<void> {
    const qmp = this.guest.qmp;
    for (const job of this.#jobs.splice(0)) {
      await qmp.execute("job-dismiss", { id: job }).catch(() => {});
    }
    for (const node of this.#nodes.splice(0)) {
      await qmp.execute("blockdev-del", { "node-name": node }).catch(() => {});
    }
  }

  /**
   * This guest's mirror jobs.
   *
   * @throws Error when one has vanished or ended with an error
   */
  async #ownJobs(): Promise<JobInfo[]> {
    const all = await this.#jobInfos();
    return this.#jobs.map((id) => {
      const job = all.find((j) => j.id === id);
      if (!job) {
        throw new Error(`Cannot copy the disks of guest "${this.guest.name}": ${id} is gone`);
      }
      if (job.error !== undefined) {
        throw new Error(
          `Cannot copy the disks of guest "${this.guest.name}": ${id} failed: ${job.error}`,
        );
      }
      return job;
    });
  }

  async #jobInfos(): Promise<JobInfo[]> {
    return await this.guest.qmp.execute<JobInfo[]>("query-jobs");
  }

  /** The disks it mirrors. */
  get targets(): readonly DiskTarget[] {
    return this.#targets;
  }
}

function jobId(index: number): string {
  return `gangway-mirror-${index}`;
}
