/**
 * What the target says back to a sender (WELCOME, ROUND_DONE, VERIFIED,
 * ERROR), read in the background so that an error is seen at once, even
 * while the sender is busy writing.
 *
 * @module
 */
import type { FrameReader } from "./frame_io.ts";
import { decodeText, decodeU32, FrameType, frameTypeName } from "./protocol.ts";
import { errorMessage } from "../_errors.ts";
import { timerMs } from "../_delay.ts";

/** The target refused something, with its own words. */
export class TargetError extends Error {
  /** An error carrying the target's words. */
  constructor(message: string) {
    super(message);
    this.name = "TargetError";
  }
}

/** Answers of the target, read in the background so that an error is seen at once. */
export class ReceiverAnswers {
  #reader: FrameReader;
  #queue: { type: number; value: number }[] = [];
  #waiter: (() => void) | undefined;
  #failure: Error | undefined;
  /** Resolves with the target's error once it is known (never rejects). */
  readonly failed: Promise<Error>;
  #fail!: (error: Error) => void;

  constructor(reader: FrameReader) {
    this.#reader = reader;
    this.failed = new Promise((resolve) => (this.#fail = resolve));
  }

  /** Reads answers until the stream ends or fails. */
  async run(): Promise<void> {
    try {
      for (;;) {
        const frame = await this.#reader.next();
        if (!frame) throw new TargetError("Target closed the connection");
        if (frame.type === FrameType.Error) {
          throw new TargetError(`Target refused: ${decodeText(frame.body)}`);
        }
        this.#queue.push({
          type: frame.type,
          value: decodeU32(frame.body, frameTypeName(frame.type)),
        });
        this.#waiter?.();
      }
    } catch (error) {
      this.#failure = error instanceof TargetError
        ? error
        : new TargetError(`Lost the target: ${errorMessage(error)}`);
      this.#fail(this.#failure);
      this.#waiter?.();
    }
  }

  /**
   * The next answer, which must be of this type, within `timeoutMs` of the
   * last bytes reaching the target. On a slow link the sender's last write
   * returns long before its bytes arrive (the socket holds up to 64 MiB):
   * `onTheWay` tells how many bytes are still unacknowledged (undefined:
   * unknown, and the wait counts from the last write), and while that falls
   * the wait goes on, for as long as the link delivers them at
   * {@linkcode SLOWEST_LINK_BYTES_PER_SECOND} or more: a peer that
   * acknowledges a trickle does not hold the sender (and paused guests)
   * for hours.
   *
   * @throws TargetError once the target failed, answered something else, or stayed silent
   */
  async expect(
    type: number,
    timeoutMs: number,
    onTheWay: () => number | undefined = () => undefined,
  ): Promise<number> {
    const started = performance.now();
    let deadline = started + timeoutMs;
    const first = onTheWay();
    const latest = first === undefined
      ? deadline
      : deadline + first / SLOWEST_LINK_BYTES_PER_SECOND * 1000;
    /** The fewest bytes on their way seen so far: only a new low is the link's progress. */
    let least = first;
    // The link's progress is looked at a few times per timeout, at most once a second.
    const lookEveryMs = Math.min(1000, timeoutMs / 4);
    while (this.#queue.length === 0) {
      if (this.#failure) throw this.#failure;
      const now = performance.now();
      const bytes = onTheWay();
      if (bytes !== undefined && least !== undefined && bytes < least) {
        least = bytes;
        deadline = Math.min(now + timeoutMs, latest); // the target has not had them all yet
      }
      const left = deadline - now;
      if (left <= 0) throw silence(type, timeoutMs, bytes, now >= latest ? now - started : 0);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, timerMs(Math.min(left, lookEveryMs)));
      });
      clearTimeout(timer);
      this.#waiter = undefined;
    }
    const answer = this.#queue.shift()!;
    if (answer.type !== type) {
      throw new TargetError(
        `Target answered ${frameTypeName(answer.type)} instead of ${frameTypeName(type)}`,
      );
    }
    return answer.value;
  }
}

/**
 * The slowest link a wait for an answer allows for the bytes still on their
 * way (0.5 Mbit/s): 64 MiB in some 18 minutes.
 */
export const SLOWEST_LINK_BYTES_PER_SECOND = 62_500;

/** Why the wait for an answer of `type` ends: what was seen of the link and the target. */
function silence(
  type: number,
  timeoutMs: number,
  onTheWay: number | undefined,
  tooSlowAfterMs: number,
): TargetError {
  const waiting = `waiting for ${frameTypeName(type)}`;
  const seconds = timeoutMs / 1000;
  if (onTheWay === undefined) {
    return new TargetError(
      `Target did not answer within ${seconds} s of the last write (${waiting})`,
    );
  }
  if (onTheWay === 0) {
    return new TargetError(
      `Target did not answer within ${seconds} s of the last byte reaching it (${waiting})`,
    );
  }
  if (tooSlowAfterMs > 0) {
    return new TargetError(
      `The link to the target delivers under ${SLOWEST_LINK_BYTES_PER_SECOND * 8 / 1e6} Mbit/s: ` +
        `${onTheWay} bytes still unacknowledged after ${
          (tooSlowAfterMs / 1000).toFixed(0)
        } s (${waiting})`,
    );
  }
  return new TargetError(
    `The target took no data for ${seconds} s with ${onTheWay} bytes unacknowledged ` +
      `(the link stalled, or the target stopped reading; ${waiting})`,
  );
}
