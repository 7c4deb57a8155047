/**
 * Live gang migration of QEMU guests, from top to bottom:
 *
 *   1. find each source guest's RAM file (QMP);
 *   2. start a destination for each at the target, waiting for its device state;
 *      disks without shared storage: each guest's overlay mirrored to its
 *      destination until the mirror has caught up (as libvirt does, before
 *      the RAM moves), then kept in step with every write;
 *   3-4. live pre-copy rounds to the target's receiver, which writes into the
 *      destinations' RAM files, the first scanning and indexing the whole
 *      gang's RAM as it goes; each distinct page content crosses once;
 *   5. pause every guest, final round; as soon as the target has applied it,
 *      QEMU moves each guest's device state while every guest's RAM digest
 *      is verified and the disk copies are completed;
 *   6. switch-over: each destination is checked and started once the gang
 *      is verified, each source quits and its RAM file is removed.
 *
 * With `finalRounds: "per-guest"` steps 5 and 6 go one guest at a time
 * while the others run on. A failure before a guest's destination runs
 * tears its destination down and resumes its source: no guest is ever left
 * paused or lost. A guest paused before the migration began moves paused
 * (its destination is not run) and is never resumed.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import type { Destination } from "./qemu/destination.ts";
import { Gang } from "./scan/gang.ts";
import { randomSeed } from "./transfer/seed.ts";
import { type MigrationReport, transferGang } from "./transfer/transfer_gang.ts";
import type { RoundReport } from "./transfer/sender_options.ts";
import { errorMessage } from "./_errors.ts";
import {
  type FinalRounds,
  type GangTimeline,
  guestReport,
  type QemuGangReport,
  type QemuGuestReport,
  unfinishedTransfer,
} from "./gang_report.ts";

export type { FinalRounds, GangTimeline, QemuGangReport, QemuGuestReport };
export type { DowntimeParts } from "./qemu/downtime_parts.ts";
import {
  checkDestinationsReady,
  switchOverGang,
  type SwitchOverPair,
  type SwitchOverResult,
  watchDestinations,
} from "./switchover/switch_over.ts";
import { GangDiskCopy } from "./switchover/disk_copy.ts";
import { DeviceStateMigration } from "./qemu/device_state.ts";
import { pausedAlready, stopWhenSourceExits, trackerFor } from "./gang_sources.ts";
import { AutoConverge } from "./auto_converge.ts";
import { DEFAULT_MAX_ROUNDS, throttleRounds } from "./plan/convergence.ts";
import type { MigrationTarget, QemuGangOptions, QemuGangResult } from "./gang_options.ts";

export type { MigrationTarget, QemuGangOptions, QemuGangResult };

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
  const since = (at: number) => (at - started) / 1000;
  const timeline: GangTimeline = {
    transfer: 0,
    paused: 0,
    finalRound: 0,
    switchOver: 0,
    running: 0,
  };

  step("Finding the guests' RAM");
  const [rams, movesPaused] = await Promise.all([
    Promise.all(sources.map((s) => s.ramBackend())),
    pausedAlready(sources),
  ]);
  // Part of the set-up, not of the transfer: whether the kernel has soft-dirty bits is probed in a
  // forked child (30-40 ms of a Deno process here); tracking itself starts with round 1.
  const dirtyTracker = await trackerFor(sources, rams);

  // The caller's signal, a source QEMU that exits (its guest is gone), or a destination that does
  // during the live rounds: the rest of the gang hears of it at once, not when it pauses (until the
  // switch-overs, which see it themselves).
  const destinationGone = new AbortController();
  const stop = stopWhenSourceExits(sources, [options.signal, destinationGone.signal]);
  step("Starting the destinations");
  let destinations: Destination[] = [];
  let transfer: MigrationReport;
  let disks: GangDiskCopy | undefined;
  // Settled once the destinations say whether disks are copied.
  let finalRounds: FinalRounds = options.finalRounds ?? "per-guest";
  // Guests paused by the migration and not handed to their switch-over: resumed on a failure
  // (a guest paused before the migration began is never resumed: it moves paused, or stays).
  const pausedGuests = new Set<number>();
  // The rounds so far, for the report of a transfer that fails after some guests moved.
  const rounds: RoundReport[] = [];
  const pausedByUs = (i: number) => void (movesPaused[i] || pausedGuests.add(i));
  const resumePaused = async () => {
    await Promise.all([...pausedGuests].map((i) => sources[i]!.resume()));
    pausedGuests.clear();
  };
  // Each guest's switch-over starts once its RAM is final at the target: its device state moves
  // while the digests are checked, and its destination runs only once its gate opens (verified,
  // and for the gang, every destination still there).
  const switching = new Map<number, Promise<SwitchOverResult>>();
  const gates = new Map<number | "gang", PromiseWithResolvers<void>>();
  const gate = (key: number | "gang") => {
    let found = gates.get(key);
    if (!found) {
      found = Promise.withResolvers<void>();
      found.promise.catch(() => {}); // a switch-over waiting on it hears of a rejection itself
      gates.set(key, found);
    }
    return found;
  };
  const startSwitchOver = (guests: number[], runAfter: Promise<void>) => {
    if (switching.size === 0) {
      step(finalRounds === "per-guest" ? "Switching over, guest by guest" : "Switching over");
      timeline.switchOver = since(performance.now());
    }
    // From here each switch-over resumes its own source if it fails.
    for (const i of guests) pausedGuests.delete(i);
    const started = switchOverGang(guests.map((i) => pairOf(i)), {
      timeoutMs: options.switchOverTimeoutMs,
      runAfter,
      sourcesPrepared: true,
    });
    guests.forEach((i, k) => switching.set(i, started.then((results) => results[k]!)));
  };
  const pairOf = (i: number): SwitchOverPair => ({
    source: sources[i]!,
    destination: destinations[i]!,
    movesPaused: movesPaused[i],
  });
  try {
    // Readied first, so that a host where guests cannot be throttled starts no destination; it
    // lets every guest run at full speed as this block ends, before a failure resumes any guest.
    await using autoConverge = (options.throttle?.max ?? 0) > 0
      ? await AutoConverge.start(sources, options.throttle!, step)
      : undefined;
    destinations = await target.prepareDestinations(sources);
    // Until the pause, where each destination is checked anyway.
    using watch = watchDestinations(destinations, destinationGone);
    const copiesDisks = destinations.some((d) => (d.diskTargets?.length ?? 0) > 0);
    if (options.finalRounds === "per-guest" && copiesDisks) {
      // A guest's mirror is completed with the whole gang paused; guest by guest is not done yet.
      throw new Error(
        'Cannot end the gang guest by guest while it copies disks: use finalRounds "gang"',
      );
    }
    finalRounds = options.finalRounds ?? (copiesDisks ? "gang" : "per-guest");
    // Capabilities set while the guests run: after a pause only `migrate` is left to send.
    await Promise.all(sources.map((s) => DeviceStateMigration.prepareSource(s)));
    disks = await GangDiskCopy.start(pairs(sources, destinations), options.diskCopy);
    if (disks.copying) {
      // Before the RAM moves: a RAM connection must not sit idle while a large disk catches up.
      step("Copying the disks");
      await disks.waitReady();
    }

    stop.signal.throwIfAborted();
    step("Scanning and sending the gang's RAM");
    timeline.transfer = since(performance.now());
    using gang = Gang.open(sources.map((s, i) => ({ name: s.name, path: rams[i]!.path })), {
      seed: randomSeed(),
    });
    // Aborted: the RAM connection is cut, so the transfer fails wherever it is, as on a lost target.
    const connection = target.connect();
    const cut = () => void connection.then((conn) => conn.close()).catch(() => {});
    stop.signal.addEventListener("abort", cut, { once: true });
    transfer = await transferGang(gang, connection, {
      dirtyTracker,
      token: target.token,
      ...options,
      onRound: (round) => {
        rounds.push(round);
        options.onRound?.(round);
      },
      // Room for every throttle step: a round that stalls is followed by a step, not the end.
      maxRounds: options.maxRounds ??
        (autoConverge ? DEFAULT_MAX_ROUNDS + throttleRounds(options.throttle!) : undefined),
      pause: async () => {
        stop.signal.throwIfAborted();
        // A mirror that failed during the rounds stops the gang here, before any guest pauses.
        await disks?.waitReady();
        watch[Symbol.dispose]();
        step("Pausing the gang for the final round");
        timeline.paused = since(performance.now());
        sources.forEach((_, i) => pausedByUs(i));
        await Promise.all(sources.map((s) => s.pause()));
        await autoConverge?.end();
        timeline.finalRound = since(performance.now());
      },
      pauseGuest: finalRounds === "per-guest"
        ? async (i) => {
          stop.signal.throwIfAborted();
          if (i === 0) {
            // Checked while the guests still run: each check is a round trip to the target.
            watch[Symbol.dispose]();
            await checkDestinationsReady(destinations);
            timeline.paused = since(performance.now());
          } else {
            // Its own, again: a guest is not paused for a destination that died meanwhile.
            await checkDestinationsReady([destinations[i]!]);
          }
          step(
            movesPaused[i]
              ? `Final round of guest "${sources[i]!.name}" (paused before the migration)`
              : `Pausing guest "${sources[i]!.name}" for its final round`,
          );
          pausedByUs(i);
          await sources[i]!.pause();
          await autoConverge?.release(i);
          if (i === 0) timeline.finalRound = since(performance.now());
        }
        : undefined,
      ramFinal: (guest) => {
        if (guest === undefined) {
          startSwitchOver(sources.map((_, i) => i), gate("gang").promise);
        } else {
          // As for the gang: a destination (or agent) found gone before it is asked to run
          // leaves its source to resume (so does an agent connection that ended before the ask
          // went out: NotLoadedError); once asked, one that does not answer leaves it in doubt.
          // Checked while the device state moves (a round trip less in the downtime), unless a
          // caller's hook comes first: that may take its time.
          const ready = () => checkDestinationsReady([destinations[guest]!], { loading: true });
          const early = options.beforeSwitchOver ? undefined : ready();
          early?.catch(() => {}); // heard of when awaited
          const runAfter = gate(guest).promise.then(async () => {
            await options.beforeSwitchOver?.([pairOf(guest)]);
            await (early ?? ready());
          });
          startSwitchOver([guest], runAfter);
        }
      },
      guestFinished: async (i) => {
        gate(i).resolve();
        // Its switch-over first: the page work that follows (the next guest's final round, the
        // gang's digests) would hold this thread, which relays its device state and hears its
        // `cont`, and those are its downtime.
        await switching.get(i);
      },
      resume: resumePaused,
      slowGuests: autoConverge?.slowGuests,
    }).finally(() => stop.signal.removeEventListener("abort", cut));
    if (gates.has("gang")) {
      // The gang is paused: no write is left for the mirrors to carry.
      if (disks.copying) step("Completing the disk copies");
      await disks.complete();
      await options.beforeSwitchOver?.(pairs(sources, destinations));
      // The device state may be moving already: loading, or loaded and paused, is ready.
      await checkDestinationsReady(destinations, { loading: true });
      gate("gang").resolve();
    }
  } catch (failure) {
    // Interrupted: the cut connection's error says less than why it was cut.
    const error = stop.signal.aborted ? stop.signal.reason : failure;
    stop[Symbol.dispose]();
    await disks?.abort();
    // No destination runs unless its gate opened: these switch-overs fail and resume their source.
    for (const unopened of gates.values()) unopened.reject(error);
    await resumePaused().catch(() => {});
    const results = await Promise.all(
      sources.map((source, i) =>
        switching.get(i) ?? { name: source.name, ok: false as const, error: errorMessage(error) }
      ),
    );
    if (!results.some((r) => r.ok)) {
      await target.discard(destinations).catch(() => {});
      throw error;
    }
    // Every guest had moved, each verified before it ran (a signal or a lost target after the
    // last switch-over): the migration is done; only the gang's own last check did not finish.
    if (results.every((r) => r.ok)) return await settle(results, undefined);
    // Some guests were finished and switched over: they run at the target; the others stay.
    throw new SwitchOverError(results, await settle(results, undefined), lostOf(results));
  }

  const results = await Promise.all(sources.map((_, i) => switching.get(i)!));
  stop[Symbol.dispose](); // the sources that moved quit now
  const result = await settle(results, transfer);
  if (result.destinations.length < sources.length) {
    throw new SwitchOverError(results, result, lostOf(results));
  }
  return result;

  /** The guests that did not move and whose source QEMU exited (those that moved have quit). */
  function lostOf(results: readonly SwitchOverResult[]): string[] {
    return sources.filter((source, i) => !results[i]!.ok && !source.alive).map((s) => s.name);
  }

  /**
   * After the switch-overs: the sources that moved quit, the destinations
   * that did not take their guest are discarded, the target is released.
   */
  async function settle(
    results: readonly SwitchOverResult[],
    transferReport: MigrationReport | undefined,
  ): Promise<QemuGangResult> {
    const running: Destination[] = [];
    const failed: Destination[] = [];
    for (const [i, result] of results.entries()) {
      if (result.ok) {
        running.push(destinations[i]!);
        await sources[i]!.close({ removeRam: true });
      } else {
        failed.push(destinations[i]!);
      }
    }
    if (failed.length > 0) await target.discard(failed).catch(() => {});
    // The guests that moved run at the target whether or not it hears that the gang is over.
    await target.release().catch(() => {});
    const moved = transferReport ?? unfinishedTransfer(sources, rams, rounds);
    const report: QemuGangReport = {
      guests: results.map((result, i) =>
        guestReport(result, rams[i]!.size, moved.guestBytesOnWire[i] ?? 0, movesPaused[i]!)
      ),
      transfer: moved,
      finalRounds,
      seconds: since(performance.now()),
      timeline: {
        ...timeline,
        running: since(Math.max(...results.map((r) => r.ok ? r.runningAt : 0), started)),
      },
    };
    return { report, destinations: running };
  }
}

/**
 * Some guests of the gang did not switch over: they run at the source, the
 * others run at the target. {@linkcode moved}, {@linkcode stayed} and
 * {@linkcode lost} say which.
 */
export class SwitchOverError extends Error {
  /** The guests that run at the target now. */
  readonly moved: string[];
  /** The guests that still run at the source (paused ones stay paused). */
  readonly stayed: string[];
  /** The guests that did not move because their source QEMU exited: they run nowhere. */
  readonly lost: string[];
  /** What the migration did, the moved guests' destinations included. */
  readonly result: QemuGangResult;

  /** An error naming the guests that stayed or were lost, with why, and those that moved. */
  constructor(
    results: readonly SwitchOverResult[],
    result: QemuGangResult,
    lost: readonly string[] = [],
  ) {
    const failed = results.filter((r) => !r.ok);
    const stayed = failed.map((r) => r.name).filter((name) => !lost.includes(name));
    const moved = results.filter((r) => r.ok).map((r) => r.name);
    const detail = failed.map((r) => `${r.name}: ${r.ok ? "" : r.error}`).join("; ");
    const run = (names: string[]) => names.length === 1 ? "runs" : "run";
    const parts = [
      stayed.length > 0 ? `${stayed.join(", ")} still ${run(stayed)} at the source` : "",
      lost.length > 0 ? `${lost.join(", ")} exited at the source` : "",
      moved.length > 0 ? `${moved.join(", ")} ${run(moved)} at the target` : "",
    ];
    super(
      `Cannot switch over ${failed.length} of ${results.length} guests: ` +
        `${parts.filter((part) => part).join("; ")} (${detail})`,
    );
    this.name = "SwitchOverError";
    this.moved = moved;
    this.stayed = stayed;
    this.lost = [...lost];
    this.result = result;
  }
}

function pairs(
  sources: readonly QemuGuest[],
  destinations: readonly Destination[],
): SwitchOverPair[] {
  return sources.map((source, i) => ({ source, destination: destinations[i]! }));
}
