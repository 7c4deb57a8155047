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
   * unknown), and while that falls the wait goes on.
   *
   * @throws TargetError once the target failed, answered something else, or stayed silent
   */
  async expect(
    type: number,
    timeoutMs: number,
    onTheWay: () => number | undefined = () => undefined,
  ): Promise<number> {
    let deadline = performance.now() + timeoutMs;
    let lastOnTheWay = onTheWay();
    // The link's progress is looked at a few times per timeout, at most once a second.
    const lookEveryMs = Math.min(1000, timeoutMs / 4);
    while (this.#queue.length === 0) {
      if (this.#failure) throw this.#failure;
      const now = performance.now();
      const bytes = onTheWay();
      if (bytes !== undefined && lastOnTheWay !== undefined && bytes < lastOnTheWay) {
        deadline = now + timeoutMs; // the link moved bytes: the target has not had them all yet
      }
      lastOnTheWay = bytes;
      const left = deadline - now;
      if (left <= 0) {
        throw new TargetError(
          bytes
            ? `The link to the target carried nothing for ${
              timeoutMs / 1000
            } s with ${bytes} bytes still to deliver (waiting for ${
              frameTypeName(type)
            }): it stalled`
            : `Target did not answer within ${timeoutMs / 1000} s (waiting for ${
              frameTypeName(type)
            })`,
        );
      }
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
