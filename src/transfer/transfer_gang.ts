/**
 * One call that runs a whole gang migration: live pre-copy rounds until
 * they converge (the first one scans and indexes the gang as it sends it),
 * pause, final round, verification.
 * On any failure the guests are resumed: a failed migration never leaves
 * a guest paused. It composes the steps a script can also call itself
 * (`examples/compose.ts`): `GangSender` (transfer) and
 * `shouldStopLiveRounds` (plan).
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import {
  checkConvergenceOptions,
  type ConvergenceOptions,
  finalRoundMs,
  type LiveRoundsEnd,
  type RoundSize,
  roundSize,
  shouldStopLiveRounds,
  whyStopLiveRounds,
} from "../plan/convergence.ts";
import { closeQuietly } from "../_close_quietly.ts";
import { GangSender, TargetError } from "./sender.ts";
import { type RoundReport, type SenderOptions } from "./sender_options.ts";
import { rescanEverything } from "../plan/dirty_tracking.ts";
import type { ByteStream } from "./frame_io.ts";
import { checkUnchangedSinceFinalRound } from "./final_checks.ts";
import type { CompressionReport } from "./compression_policy.ts";
import { errorMessage } from "../_errors.ts";

/** A connected stream to the target (TCP or TLS), or one being connected. */
export type Connection = ByteStream & { close(): void };

/** Options of {@linkcode transferGang}. */
export interface TransferGangOptions extends SenderOptions, ConvergenceOptions {
  /** Stops whatever writes to the guests' RAM (called once, before the final round). */
  pause?: () => Promise<void> | void;
  /**
   * Finish the guests one at a time instead of pausing the whole gang for
   * one final round: each guest in turn is paused by this, its last pages
   * are sent and its digest verified (`GangSender.finishGuest`) while the
   * others still run, and {@linkcode guestFinished} is told. A guest's
   * downtime then holds its own final round, not the whole gang's. Used
   * instead of `pause` when there are live rounds (with `maxRounds: 1`
   * `pause` stops the gang for its one pass).
   */
  pauseGuest?: (guest: number) => Promise<void> | void;
  /**
   * A guest finished by `pauseGuest`'s turn is verified: it may be switched
   * over now. The transfer goes on (the next guest's pause, or the end)
   * once this returns or resolves: a caller that relays the guest's switch-over
   * on this thread lets it finish first, since the page work that follows
   * would hold it up.
   */
  guestFinished?: (guest: number) => Promise<void> | void;
  /**
   * The target applied a guest's last pages (with `pauseGuest`) or the
   * final round (without; guest undefined): its RAM there is final, and
   * only the verification of its digest is left. Device state may move
   * now, as long as no destination runs before the verification.
   */
  ramFinal?: (guest: number | undefined) => void;
  /**
   * Lets the paused guests run again (called only if the migration fails
   * after a pause; with `pauseGuest`, the caller knows which guests are
   * paused and not finished).
   */
  resume?: () => Promise<void> | void;
  /**
   * Slows the guests down (auto-converge: `CpuThrottle` for QEMU guests)
   * when the live rounds stopped shrinking, rather than ending them:
   * resolves the share of their CPU time now held back, or undefined when
   * they cannot be slowed further (the rounds then end). Without it,
   * rounds that stall end.
   */
  slowGuests?: () => Promise<number | undefined>;
  /** Called after each round. */
  onRound?: (report: RoundReport) => void;
  /**
   * After the final round, read the gang once more and fail if any page
   * changed since that round read it: for callers that cannot pause what
   * writes the files (`send`). Default false: `pause` stops the writers.
   */
  checkUnchanged?: boolean;
}

/** What a gang migration did (the `send --json` document). */
export interface MigrationReport {
  /** Each guest's name and RAM size in bytes, in gang order. */
  guests: { name: string; bytes: number }[];
  /** Each round, in order. */
  rounds: RoundReport[];
  /** Every byte written to the target, headers included. */
  bytesOnWire: number;
  /** Of those, the frames that carried each guest's pages (in gang order). */
  guestBytesOnWire: number[];
  /** Sum of the guests' RAM sizes. */
  guestBytes: number;
  /** From the start to the verification. */
  seconds: number;
  /**
   * The target found every guest's RAM identical to the source's as the
   * final round ended: every digest matched, no file changed size (and,
   * with `checkUnchanged`, no page changed after the final round read it).
   */
  verified: boolean;
  /** XXH3-128 digest of each guest's RAM at the end (keyed by the seed and its size: see guestDigest). */
  digests: string[];
  /** Seconds from the pause to the verified end. */
  pausedSeconds: number;
  /** Of those, seconds of the verification (digests sent, the target's answer). */
  verifySeconds: number;
  /** How rounds after the first chose the pages to re-read: "rescan" (every page) or "soft-dirty". */
  dirtyTracking: string;
  /**
   * Why the live rounds ended: "converged" (the last one, or what changed
   * after it, was small enough, or small enough for each guest's own catch-up
   * round to leave its final round small), "round limit" (`maxRounds`), "stalled"
   * (they stopped shrinking), "content room", or "none" (`maxRounds: 1`:
   * one pass). Absent in a report of a transfer that ended before its rounds did.
   */
  liveRoundsEnded?: LiveRoundsEnd;
  /** What compression of page data did. */
  compression: CompressionReport;
}

/**
 * Pages a guest must have changed, by the estimate, for a live round of
 * its own before its final round: 2 MiB, some 20 ms on a Gigabit link,
 * about what that round costs to rescan a guest of 256 MiB. The estimate
 * counts in steps of 1/61 of the guest (61 pages for 256 MiB), and an
 * idle guest changed a few hundred pages by then in the lab: 256 caught
 * idle guests up for nothing.
 */
const CATCH_UP_PAGES = 512;

/**
 * Migrates a gang to a target over `conn` (or once it is connected). With
 * `maxRounds: 1` (a gang nobody writes, or one paused from the start) it
 * makes one pass instead: see
 * {@linkcode GangSender.onePass}. Returns once the target has
 * verified every guest; the guests are then still paused, for the caller
 * to switch over (or resume them).
 *
 * Requires `--allow-ffi`.
 *
 * @throws the first error, after resuming the guests if they were paused
 */
export async function transferGang(
  gang: Gang,
  conn: Connection | Promise<Connection>,
  options: TransferGangOptions = {},
): Promise<MigrationReport> {
  const started = performance.now();
  let paused = false;
  let pausedAt = 0;
  let sender: GangSender | undefined;
  const dirtyTracker = options.dirtyTracker ?? rescanEverything;
  try {
    checkConvergenceOptions(options);
  } catch (error) {
    // Refused before the handshake: the connection is closed here, as GangSender.connect does.
    await Promise.resolve(conn).then(closeQuietly, () => {});
    throw error;
  }
  try {
    // No preparation scan apart from the rounds: the first one indexes every page as it sends it
    // (a separate scan would read the gang twice; GangSender.prepare).
    sender = await GangSender.connect(gang, await conn, { ...options, dirtyTracker });
    const sizes: RoundSize[] = [];
    // No live rounds: the final round is the only one, and it sends the gang in one pass.
    const onePass = shouldStopLiveRounds(sizes, options);
    // Guests that end one at a time each catch up alone before their pause (below): the live
    // rounds of the gang need only bring each guest's share of the changes to the threshold.
    const pauses = options.pauseGuest ? gang.guests.length : 1;
    // A guest that changed more than its final round may carry catches up first (stopPages may
    // be set under CATCH_UP_PAGES).
    const catchUpPages = Math.min(CATCH_UP_PAGES, options.stopPages ?? CATCH_UP_PAGES);
    // A round registers at most a content per page: room for the next one and the final round.
    const roomLeft = () => sender!.contentRoom >= 2 * gang.pages;
    /**
     * Refuses a pause whose final round would take longer than maxDowntimeMs (a pause follows);
     * the changes are estimated only when there is a limit.
     */
    const checkDowntime = (who: string, estimateChanged: () => number) => {
      if (options.maxDowntimeMs === undefined) return;
      const changedPages = estimateChanged();
      const measured = linkRate(sender!.rounds);
      const capped = (options.maxBandwidth ?? Infinity) < measured;
      const rate = capped ? options.maxBandwidth! : measured;
      const ms = finalRoundMs(changedPages, rate);
      if (ms <= options.maxDowntimeMs) return;
      throw new Error(
        `${who} would stay paused ${
          Number.isFinite(ms) ? `about ${ms.toFixed(0)} ms` : "for as long as the whole transfer"
        } for its final round (${changedPages} pages to send at ${(rate / 1e6).toFixed(1)} MB/s, ${
          capped ? "the sender's bandwidth cap" : "the link's measured rate"
        }), over the limit of ${options.maxDowntimeMs} ms: not paused`,
      );
    };
    let throttle = 0;
    let ended: LiveRoundsEnd | undefined = onePass ? "none" : undefined;
    while (!ended) {
      const why = whyStopLiveRounds(sizes, options, pauses, options.slowGuests !== undefined);
      if (!roomLeft()) ended = "content room";
      else if (why === "stalled" && options.slowGuests) {
        const slowed = await options.slowGuests();
        if (slowed === undefined) ended = "stalled"; // slowed as far as allowed
        else throttle = slowed;
      } else ended = why;
      if (ended) break;
      const report = await sender.round();
      if (throttle > 0) report.throttle = throttle;
      const estimating = performance.now();
      const byGuest = gang.guests.map((guest) => sender!.estimateChanged(guest.number));
      report.changedAfter = {
        pages: byGuest.reduce((sum, pages) => sum + pages, 0),
        mostInOneGuest: Math.max(...byGuest),
        seconds: (performance.now() - estimating) / 1000,
      };
      options.onRound?.(report);
      sizes.push(roundSize(report));
    }
    if (options.pauseGuest && !onePass) {
      for (const guest of gang.guests) {
        // A guest that wrote much since the last round (the live rounds stalled, or the guests
        // before it took a while to finish) catches up live first, alone, which takes a fraction
        // of a gang's round: its final round (its downtime) then carries only what it writes
        // meanwhile. Not past a round limit, nor after the rounds ran out of content room; else the
        // room the last live round left (2 pages' worth a page) holds a catch-up and a final round
        // of every guest.
        let changed = ended === "converged" || ended === "stalled"
          ? sender.estimateChanged(guest.number)
          : undefined;
        if (changed !== undefined && changed > catchUpPages) {
          const caughtUp = await sender.guestRound(guest.number); // not in onRound?.(): see below
          options.onRound?.(caughtUp);
          changed = undefined; // it wrote on during its catch-up
        }
        checkDowntime(
          `Guest "${guest.name}"`,
          () => changed ?? sender!.estimateChanged(guest.number),
        );
        if (!paused) pausedAt = performance.now(); // the first pause, after any catch-up of its guest
        paused = true; // before: a pause that failed halfway must still be undone
        await options.pauseGuest(guest.number);
        const finished = await sender.finishGuest(
          guest.number,
          () => options.ramFinal?.(guest.number),
        );
        options.onRound?.(finished);
        await options.guestFinished?.(guest.number);
      }
    } else {
      if (options.pause) checkDowntime("The gang", () => sender!.estimateChanged());
      await options.pause?.();
      paused = true;
      pausedAt = performance.now();
    }
    // Not inside onRound?.(): without an onRound that would skip the round itself.
    // (With every guest finished alone, the final round only closes the rounds.)
    const final = onePass ? await sender.onePass() : await sender.round({ final: true });
    options.onRound?.(final);
    if (options.checkUnchanged) checkUnchangedSinceFinalRound(gang);
    if (!options.pauseGuest || onePass) options.ramFinal?.(undefined);
    const verifyStarted = performance.now();
    const digests = await sender.verify();
    const now = performance.now();
    return {
      guests: gang.guests.map((g) => ({ name: g.name, bytes: g.ram.size })),
      rounds: sender.rounds,
      bytesOnWire: sender.bytesOnWire,
      guestBytesOnWire: sender.guestBytesOnWire,
      guestBytes: gang.bytes,
      seconds: (now - started) / 1000,
      verified: true,
      digests,
      pausedSeconds: (now - pausedAt) / 1000,
      verifySeconds: (now - verifyStarted) / 1000,
      dirtyTracking: sender.dirtyTracking,
      liveRoundsEnded: ended,
      compression: sender.compression,
    };
  } catch (error) {
    try {
      if (paused) await resumeAfter(error, options.resume);
    } finally {
      // Then the target hears why (the guests first), unless it failed itself and said so.
      if (!(error instanceof TargetError)) await sender?.abandon(toldTarget(error, gang));
    }
    throw error;
  } finally {
    sender?.close(); // connect() closes the connection itself if it fails
  }
}

/**
 * The link's rate as the rounds measured it: the kernel's latest measure of
 * it, or else the most a round put on it per second (a lower bound). A
 * sender's cap (`maxBandwidth`) paces the final round too: the caller takes
 * the lower of the two.
 */
function linkRate(rounds: readonly RoundReport[]): number {
  for (const round of rounds.toReversed()) {
    const capacity = round.time?.compression?.linkCapacityBytesPerSecond ?? 0;
    if (capacity > 0) return capacity;
  }
  return Math.max(0, ...rounds.map((round) => round.bytesOnWire / round.seconds));
}

/**
 * A failure as the target hears it: where the source keeps its guests' RAM
 * is none of another host's business (nor of its logs), so each file is
 * named by its guest, as HELLO named the guests.
 */
function toldTarget(error: unknown, gang: Gang): string {
  let text = errorMessage(error);
  for (const { name, ram } of gang.guests) {
    const named = `<guest "${name}"'s RAM file>`;
    text = text.replaceAll(`"${ram.path}"`, named).replaceAll(ram.path, named);
  }
  return text;
}

/** Resumes the guests after a failure; if that fails too, says both. */
async function resumeAfter(error: unknown, resume: (() => Promise<void> | void) | undefined) {
  try {
    await resume?.();
  } catch (resumeError) {
    throw new Error(
      `${errorMessage(error)}; then resuming the guests failed too: ${errorMessage(resumeError)}`,
    );
  }
}
