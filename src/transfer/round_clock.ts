/**
 * What a round of the sender measures of itself as it goes: where its
 * time went (the sender's own page work, its waits for zstd and the
 * stream, the target's tail) and its bytes, for its `RoundReport`.
 *
 * @module
 */
import type { RoundCounts } from "../plan/round_planner.ts";
import type { SenderWaits } from "./compression_policy.ts";
import type { RoundReport } from "./sender_options.ts";
import type { TargetLink } from "./target_link.ts";

/** A round's clock, started when the round starts. */
export class RoundClock {
  readonly #link: TargetLink;
  readonly #started = performance.now();
  readonly #bytesBefore: number;
  readonly #guestBytesBefore: number[];
  readonly #waitedBefore: SenderWaits;
  #flushed = 0;
  #acknowledged = 0;
  /** The sender's time in the scan, ms. */
  scanMs = 0;
  /** The sender's time in the planner, ms. */
  planMs = 0;

  constructor(link: TargetLink) {
    this.#link = link;
    this.#bytesBefore = link.bytesOnWire;
    this.#guestBytesBefore = [...link.frames.guestBytes];
    this.#waitedBefore = { ...link.waits };
  }

  /** The round's last frame went out: the wait for the target's acknowledgement starts. */
  flushed(): void {
    this.#flushed = performance.now();
  }

  /** The target acknowledged the round: its wait ends. */
  acknowledged(): void {
    this.#acknowledged = performance.now();
  }

  /** The round's report, as of now. */
  report(round: number, final: boolean, counts: RoundCounts): RoundReport {
    const { rematched, deltas, ...pages } = counts;
    const waits = this.#link.waits;
    const now = performance.now();
    return {
      round,
      final,
      seconds: (now - this.#started) / 1000,
      bytesOnWire: this.#link.bytesOnWire - this.#bytesBefore,
      guestBytesOnWire: this.#link.frames.guestBytes.map((bytes, guest) =>
        bytes - this.#guestBytesBefore[guest]!
      ),
      pages,
      rematched,
      deltas,
      time: {
        scanSeconds: this.scanMs / 1000,
        planSeconds: this.planMs / 1000,
        compressSeconds: waits.zstd - this.#waitedBefore.zstd,
        linkWaitSeconds: waits.link - this.#waitedBefore.link,
        receiverWaitSeconds: (this.#acknowledged - this.#flushed) / 1000,
        compression: this.#link.compression.estimate,
      },
    };
  }
}
