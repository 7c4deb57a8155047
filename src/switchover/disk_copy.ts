/**
 * A gang's disks copied without shared storage: each source guest's
 * overlay mirrored into its destination's (see src/qemu/block_mirror.ts).
 * The mirrors catch up before the RAM moves and stay in step while it
 * does, are completed with the gang paused, and the destinations' exports
 * end before any device state moves. A gang on shared storage
 * has nothing to copy: every step is then a no-op.
 *
 * @module
 */
import { DiskMirror } from "../qemu/block_mirror.ts";
import type { SwitchOverPair } from "./switch_over.ts";

/** Options of {@linkcode GangDiskCopy}'s steps. */
export interface DiskCopyOptions {
  /** Longest wait for every mirror to catch up, before the gang pauses. Default 600 s. */
  readyTimeoutMs?: number;
  /** Longest wait for the last writes to cross, with the gang paused. Default 60 s. */
  completeTimeoutMs?: number;
}

/** The disk copies of one gang. */
export class GangDiskCopy {
  readonly #pairs: readonly SwitchOverPair[];
  readonly #mirrors: DiskMirror[];
  readonly #options: DiskCopyOptions;

  private constructor(
    pairs: readonly SwitchOverPair[],
    mirrors: DiskMirror[],
    options: DiskCopyOptions,
  ) {
    this.#pairs = pairs;
    this.#mirrors = mirrors;
    this.#options = options;
  }

  /**
   * Starts mirroring every disk the destinations ask for.
   *
   * Requires `--allow-net`, `--allow-read`, `--allow-write` (QMP, the NBD sockets).
   *
   * @throws Error when a mirror cannot start; none then runs
   */
  static async start(
    pairs: readonly SwitchOverPair[],
    options: DiskCopyOptions = {},
  ): Promise<GangDiskCopy> {
    const copying = pairs.filter((pair) => (pair.destination.diskTargets?.length ?? 0) > 0);
    const started = await Promise.allSettled(
      copying.map((pair) => DiskMirror.start(pair.source, pair.destination.diskTargets!)),
    );
    const mirrors = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) {
      await Promise.all(mirrors.map((mirror) => mirror.abort()));
      throw failed.reason;
    }
    return new GangDiskCopy(copying, mirrors, options);
  }

  /** True when the gang has disks to copy. */
  get copying(): boolean {
    return this.#mirrors.length > 0;
  }

  /**
   * Waits until every mirror has caught up (at once when they have: a
   * ready mirror stays so until it fails).
   *
   * @throws Error when a mirror failed or does not catch up in time
   */
  async waitReady(): Promise<void> {
    const timeoutMs = this.#options.readyTimeoutMs ?? 600_000;
    await Promise.all(this.#mirrors.map((mirror) => mirror.waitReady(timeoutMs)));
  }

  /**
   * With the gang paused: completes every mirror, then ends the
   * destinations' exports, so that each guest's disk at its destination
   * holds every write it made at its source.
   *
   * @throws Error when a copy cannot be completed (the gang must then resume at the source)
   */
  async complete(): Promise<void> {
    const timeoutMs = this.#options.completeTimeoutMs ?? 60_000;
    await Promise.all(this.#mirrors.map((mirror) => mirror.complete(timeoutMs)));
    await Promise.all(this.#pairs.map((pair) => pair.destination.endDiskTargets?.()));
  }

  /** Stops every mirror; the source guests keep their disks. Never throws. */
  async abort(): Promise<void> {
    await Promise.all(this.#mirrors.map((mirror) => mirror.abort()));
  }
}
