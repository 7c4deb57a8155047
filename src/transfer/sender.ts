/**
 * The source side of a gang migration, as steps a script calls one by one:
 * connect (handshake), prepare (an optional preparation scan), round (one live
 * pre-copy round; the last one with the guests paused) and verify.
 *
 * @module
 */
import { PARALLEL_CHUNK_PAGES, scanChunks } from "../scan/scan_chunks.ts";
import type { Gang } from "../scan/gang.ts";
import { PAGE_SIZE } from "../native/ram_file.ts";
import { emptyCounts, RoundPlanner } from "../plan/round_planner.ts";
import { type DirtyTracker, rescanEverything } from "../plan/dirty_tracking.ts";
import { type Preparation, prepareGang } from "../plan/preparation.ts";
import type { CompressionReport } from "./compression_policy.ts";
import { TargetError } from "./receiver_answers.ts";
import type { ByteStream } from "./frame_io.ts";
import { TargetLink } from "./target_link.ts";
import { checkSizesUnchanged } from "./final_checks.ts";
import { encodeRoundEnd, FrameType, PROTOCOL_VERSION } from "./protocol.ts";
import { encodeDone, encodeGuestDone, guestDigest } from "./digests.ts";
import { encodeHello } from "./hello_frame.ts";
import {
  answerTimeoutMs,
  checkSenderOptions,
  type RoundReport,
  type SenderOptions,
} from "./sender_options.ts";
import { RoundClock } from "./round_clock.ts";
import { RoundBuffers } from "./round_buffers.ts";
import { GuestReads } from "./guest_reads.ts";
import { shareEventLoop } from "../_delay.ts";
import { closeQuietly } from "../_close_quietly.ts";

export { TargetError };

/**
 * Sends a gang's RAM to a target that runs `receive`. Each distinct page
 * content crosses the wire once for the whole gang; every other page with
 * that content is a reference.
 *
 * Requires `--allow-ffi` (and `--allow-net` for the connection).
 *
 * @example
 * ```ts
 * import { GangSender } from "./sender.ts";
 * import { randomSeed } from "./seed.ts";
 * import { Gang, type GuestSpec } from "../scan/gang.ts";
 *
 * declare const guests: GuestSpec[];
 * declare function pauseMyGuests(): Promise<void>;
 * using gang = Gang.open(guests, { seed: randomSeed() });
 * const conn = await Deno.connect({ hostname: "10.0.0.2", port: 7000 });
 * await using sender = await GangSender.connect(gang, conn);
 * await sender.round();                  // live: the guests keep running
 * await pauseMyGuests();
 * await sender.round({ final: true });   // the rest, with the guests paused
 * await sender.verify();
 * ```
 */
export class GangSender implements AsyncDisposable {
  readonly #gang: Gang;
  readonly #link: TargetLink;
  readonly #planner: RoundPlanner;
  readonly #options: SenderOptions;
  #tracker: DirtyTracker;
  readonly #buffers: RoundBuffers;
  #roundsStarted = 0;
  /** Guests read and finished so far. */
  readonly #guests: GuestReads;
  /** The index holds a scan of the gang: a preparation's, or the first round's. */
  #prepared = false;
  /** What sent the gang (then only verify() is left), or verify() once it ran. */
  #sentBy: "" | "onePass()" | "the final round" | "verify()" = "";
  /** Rounds done so far. */
  readonly rounds: RoundReport[] = [];
  /** What compression did so far. */
  get compression(): CompressionReport {
    return this.#link.compression.report;
  }

  /** How rounds after the first choose the pages they re-read. */
  get dirtyTracking(): DirtyTracker["kind"] {
    return this.#tracker.kind;
  }
  /** Bytes of the frames that carried each guest's pages (rounds only), by guest number. */
  get guestBytesOnWire(): number[] {
    return this.#link.frames.guestBytes;
  }

  private constructor(gang: Gang, conn: ByteStream & { close(): void }, options: SenderOptions) {
    this.#gang = gang;
    this.#options = options;
    this.#tracker = options.dirtyTracker ?? rescanEverything;
    this.#link = new TargetLink(gang, conn, options);
    this.#buffers = new RoundBuffers(options.finalThreads);
    const deltas = options.deltas ?? options.compression !== "none";
    this.#planner = new RoundPlanner(gang, PARALLEL_CHUNK_PAGES, deltas);
    this.#guests = new GuestReads(gang);
  }

  /**
   * Introduces the gang to the target and waits for it to accept.
   *
   * @param conn a connected stream (TCP or TLS); closed by {@linkcode close}, and here when
   * this throws
   * @throws TargetError with the target's reason if it refuses
   * @throws RangeError naming an option out of its range (`checkSenderOptions`), before anything
   * is sent
   */
  static async connect(
    gang: Gang,
    conn: ByteStream & { close(): void },
    options: SenderOptions = {},
  ): Promise<GangSender> {
    let sender: GangSender;
    try {
      checkSenderOptions(options);
      sender = new GangSender(gang, conn, options);
    } catch (error) {
      closeQuietly(conn); // refused before the handshake: the connection is the caller's no more
      throw error;
    }
    try {
      const hello = encodeHello({
        version: PROTOCOL_VERSION,
        pageSize: PAGE_SIZE,
        seed: gang.index.seed,
        token: options.token ?? "",
        guests: gang.guests.map((g) => ({ name: g.name, size: g.ram.size })),
      });
      await sender.#link.ask(hello, FrameType.Welcome, answerTimeoutMs(options, false));
      return sender;
    } catch (error) {
      sender.close();
      throw error;
    }
  }

  /** Bytes written to the target so far, headers included. */
  get bytesOnWire(): number {
    return this.#link.bytesOnWire;
  }

  /** Contents the gang may still register at the target (`MAX_CONTENTS_PER_PAGE`). */
  get contentRoom(): number {
    return this.#planner.target.maxContents - this.#planner.target.contents;
  }

  /**
   * The paper's preparation phase, apart from the rounds: starts dirty
   * tracking and scans every page of the gang into the content index while
   * the guests run ({@linkcode prepareGang}). Optional: without it the
   * first round starts the tracking and indexes every page as it sends it,
   * which reads the gang once instead of twice (it classifies pages as
   * identical once it has seen them all).
   */
  async prepare(): Promise<Preparation> {
    return this.usePreparation(
      await prepareGang(this.#gang, {
        dirtyTracker: this.#tracker,
        threads: this.#options.scanThreads,
      }),
    );
  }

  /**
   * Takes a preparation the caller made with {@linkcode prepareGang} (of
   * this sender's gang), before this sender existed or while it connected:
   * rounds are planned from it, and its dirty tracker chooses what rounds
   * after the first re-read.
   *
   * @throws Error if a round ran already, or the preparation is of another gang
   */
  usePreparation(preparation: Preparation): Preparation {
    if (this.#roundsStarted > 0) {
      throw new Error("Cannot use a preparation after the first round: it must come before");
    }
    this.#planner.notePreparationScan(preparation);
    this.#tracker = preparation.dirtyTracker;
    this.#prepared = true;
    return preparation;
  }

  /**
   * One pre-copy round: re-scans every page and sends what the target
   * lacks. With `final`, the caller has paused the guests: after it the
   * target holds exactly the source's RAM.
   */
  async round(options: { final?: boolean } = {}): Promise<RoundReport> {
    if (this.#sentBy) throw new Error(`round() after ${this.#sentBy}: the gang is sent already`);
    const report = await this.#runRound(options.final ?? false);
    if (report.final) this.#sentBy = "the final round";
    return report;
  }

  /**
   * A live round of one guest while it runs: what it changed since its last
   * read is sent, and it stays in the gang. Before its own final round it
   * makes that round carry only what the guest writes meanwhile.
   *
   * @throws Error after the gang is sent, for a guest finished already, or one no round has read
   */
  async guestRound(guest: number): Promise<RoundReport> {
    if (this.#sentBy) throw new Error(`guestRound() after ${this.#sentBy}: the gang is sent`);
    if (!this.#guests.open(guest) || !this.#guests.read(guest)) {
      throw new Error(
        `Cannot catch guest ${guest} up: it is finished, not in the gang, or not read yet`,
      );
    }
    const report = await this.#runRound(false, { guest, paused: false });
    report.caughtUp = guest;
    return report;
  }

  /**
   * The final round of one guest, whose writer the caller has paused while
   * the others may still run: the guest's changed pages are sent and its
   * digest verified by the target. From then on it is finished: no later
   * round reads it, and no reference names a content that only its target
   * pages hold (it may run at the target and change them), so its
   * switch-over may start as soon as this returns. Once every guest is
   * finished, `round({ final: true })` sends nothing and
   * {@linkcode verify} ends the migration.
   *
   * @param applied called once the target has applied the guest's last pages (its RAM there is
   * final), before the digest is checked: its device state may start to move then
   * @throws Error after onePass(), for a guest finished already, or if the target's digest differs
   */
  async finishGuest(guest: number, applied?: () => void): Promise<RoundReport> {
    if (this.#sentBy) throw new Error(`finishGuest() after ${this.#sentBy}: the gang is sent`);
    if (!this.#guests.open(guest)) {
      throw new Error(`Cannot finish guest ${guest}: it is finished already, or not in the gang`);
    }
    const report = await this.#runRound(false, { guest, paused: true });
    applied?.();
    const done = encodeGuestDone(guest, this.#digest(guest));
    const verified = await this.#link.ask(
      done,
      FrameType.GuestVerified,
      answerTimeoutMs(this.#options, true),
    );
    if (verified !== guest) {
      throw new TargetError(`Target verified guest ${verified}, not ${guest}`);
    }
    // The target retired the guest's pages when it read GUEST_DONE: the mirror does it here, in the
    // same place of the stream (nothing was sent since).
    this.#planner.retire(guest);
    this.#guests.finish(guest);
    return report;
  }

  /**
   * The whole transfer of a gang nobody writes (guests stopped, or paused
   * already), in one pass: no preparation scan and no live rounds, which
   * would only read every page again to find nothing changed. Each page is
   * scanned, indexed and sent at once; the first page of a content carries
   * it and later ones refer to it. Then only {@linkcode verify} is left.
   *
   * @throws Error if the sender prepared or ran a round already
   */
  async onePass(): Promise<RoundReport> {
    if (this.#prepared || this.#roundsStarted > 0) {
      throw new Error("onePass() must be the sender's only step before verify()");
    }
    this.#sentBy = "onePass()";
    return await this.#runRound(true);
  }

  /** A round over every guest not finished yet, or over one: paused (finishGuest) or not (guestRound). */
  async #runRound(
    final: boolean,
    only?: { guest: number; paused: boolean },
  ): Promise<RoundReport> {
    const round = ++this.#roundsStarted;
    // No preparation: this round is the gang's first scan, and tracking starts before it reads
    // (unless it is the final round: no round comes after it to use the tracking).
    const firstScan = !this.#prepared;
    if (firstScan && !final) this.#tracker.start();
    this.#prepared = true;
    const counts = emptyCounts();
    const clock = new RoundClock(this.#link);
    this.#link.compression.restart(); // the time since the last round's frames was no page work
    const pagesTotal = this.#gang.pages;
    let pagesBefore = 0; // pages of the guests already done
    // With the gang paused the cores are free: the final round's page work takes them all. A guest
    // finishing alone stays on one thread, as the rest of the gang still runs (two threads took
    // 32-54 ms for a guest's 256 MiB, one 26-31: docs/lab-results/runs/ab-16).
    const threads = final ? this.#buffers.finalThreads : 1;
    for (const guest of this.#gang.guests) {
      if (this.#guests.finished(guest.number) || (only && guest.number !== only.guest)) {
        pagesBefore += guest.ram.pages;
        continue;
      }
      // A guest's first read sends every page, so it reads them all; later rounds read what may
      // have changed, and only changed pages are sent.
      const firstRead = await this.#guests.begin(guest.number);
      const out = this.#buffers.of(threads, firstRead);
      const mask = firstRead ? undefined : this.#tracker.changed(guest.number);
      // Later reads send only pages that changed: unchanged ones are hashed in place, not copied.
      const bytes = firstRead ? "all" : "changed";
      const chunks = scanChunks(this.#gang, guest.number, { out, mask, threads, bytes });
      while (true) {
        const scanStarted = performance.now();
        const next = chunks.next();
        // Later reads are in place: the guest's mapping is filled now, not in its final round.
        if (next.done && firstRead && !final) this.#guests.premap(guest.number, guest.ram);
        const scanned = performance.now();
        clock.scanMs += scanned - scanStarted;
        if (next.done) break;
        const chunk = next.value;
        const plan = this.#planner.planChunk(
          guest.number,
          chunk.first,
          chunk.count,
          out,
          firstRead,
          counts,
          this.#link.compression.wantsDeltas,
        );
        clock.planMs += performance.now() - scanned;
        await this.#link.frames.send(guest.number, chunk.first, plan, out.buf);
        await this.#link.flushWhenQuiet();
        // A round that finds little changed writes little, and its awaits resolve at once.
        await shareEventLoop();
        const pagesDone = pagesBefore + chunk.first + chunk.count;
        this.#options.onProgress?.({ round, pagesDone, pagesTotal, bytesOnWire: this.bytesOnWire });
      }
      pagesBefore += guest.ram.pages;
    }
    if (final || only?.paused) checkSizesUnchanged(this.#gang);
    await this.#link.send(encodeRoundEnd(round, final));
    await this.#link.flush();
    clock.flushed();
    // While the link drains the send buffer and the target applies the round's last frames (made
    // then, not while the target answers the HELLO: 35 ms of fresh memory and threads on a VM).
    if (!final) this.#buffers.large();
    // A final round, and a guest's own (finishGuest), run with guests paused.
    const paused = final || only?.paused === true;
    const acknowledged = await this.#link.answer(
      FrameType.RoundDone,
      answerTimeoutMs(this.#options, paused),
    );
    clock.acknowledged();
    if (acknowledged !== round) {
      throw new TargetError(`Target acknowledged round ${acknowledged}, not ${round}`);
    }
    if (firstScan) this.#planner.noteFirstScan(counts); // it counts identical pages anew
    const report = clock.report(round, final, counts);
    if (only?.paused) report.guest = only.guest;
    this.rounds.push(report);
    return report;
  }

  /**
   * The pages a live round now would find changed, estimated from one page
   * in 61 of every guest not finished (a guest no round has read counts
   * whole): without soft-dirty bits a round re-reads the whole gang to find
   * what changed, and this tells first, for 1/61 of that, whether it is
   * little enough for the final round.
   *
   * @param only the guest to estimate alone
   */
  estimateChanged(only?: number): number {
    return this.#guests.estimateChanged(only);
  }

  /**
   * Sends the digest of every guest's RAM (from the last round's hashes)
   * and waits until the target found its copy identical.
   *
   * @returns the digests, one per guest
   * @throws Error before the final round (or onePass()), or when called again; TargetError if any
   * guest's copy differs
   */
  async verify(): Promise<string[]> {
    if (this.#sentBy === "verify()") throw new Error("verify() again: the gang is over");
    if (!this.#sentBy) {
      // The target would compare a copy still in progress, and call it corrupt.
      throw new Error(
        "verify() needs the final round first: round({ final: true }) with the guests paused, or onePass()",
      );
    }
    this.#sentBy = "verify()"; // the target ends the gang once it has verified it
    const digests = this.#gang.guests.map((g) => this.#digest(g.number));
    const guests = await this.#link.ask(
      encodeDone(digests),
      FrameType.Verified,
      answerTimeoutMs(this.#options, true),
    );
    if (guests !== digests.length) {
      throw new TargetError(`Target verified ${guests} guests of ${digests.length}`);
    }
    return digests;
  }

  /** A guest's digest, from the hashes of its last scan. */
  #digest(guest: number): string {
    const { index } = this.#gang;
    return guestDigest(index.pageHashes(guest), index.seed, this.#gang.guests[guest]!.ram.size);
  }

  /**
   * Tells the target why this sender gives up, when the failure is its own
   * (the target then fails the gang with that reason); never throws.
   */
  async abandon(reason: string): Promise<void> {
    await this.#link.tellError(reason);
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    this.#link.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}
