/**
 * The sender's connection to its target: page frames queued in order
 * (zstd running on other threads meanwhile, see chunk_frames.ts), control
 * frames written after every page frame before them, the target's
 * answers read alongside, and the sender's own waits for the stream and
 * for zstd counted. A write that fails becomes the target's own error
 * when it sent one.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import type { Gang } from "../scan/gang.ts";
import { CompressionPolicy, type SenderWaits } from "./compression_policy.ts";
import { ReceiverAnswers, TargetError } from "./receiver_answers.ts";
import { type ByteStream, FrameReader, FrameWriter } from "./frame_io.ts";
import { Pacer } from "./pacer.ts";
import { ChunkFrames } from "./chunk_frames.ts";
import type { SenderOptions } from "./sender_options.ts";
import { errorMessage } from "../_errors.ts";
import { encodeText, FrameType } from "./protocol.ts";
import { withTimeout } from "../_delay.ts";
import { ConnectionSocket } from "../native/connection_socket.ts";

/** Largest answer of a target: an ERROR of 4000 characters in UTF-8. */
const ANSWER_BODY_BYTES = 16384;
/**
 * Longest time frames wait in a half-full write buffer. A round that finds
 * few changed pages in a large gang may scan for a minute before it fills
 * one: the target would take that silence for a dead sender.
 */
const FLUSH_EVERY_MS = 5_000;

/** A sender's connection to its target (see the module). */
export class TargetLink {
  readonly #conn: ByteStream & { close(): void };
  readonly #writer: FrameWriter;
  readonly #socket: ConnectionSocket | undefined;
  /** The target's answers, read as they come. */
  readonly #answers: ReceiverAnswers;
  /** Whether each page frame goes compressed, and what compression did so far. */
  readonly compression: CompressionPolicy;
  /** The page frames of the rounds, queued in order. */
  readonly frames: ChunkFrames;
  /** The sender's waits, for the stream and for zstd (the rounds' time split and the policy). */
  readonly waits: SenderWaits = { link: 0, zstd: 0 };
  #closed = false;
  /** When frames were last pushed out (see FLUSH_EVERY_MS). */
  #flushedAt = performance.now();

  /** Starts reading the target's answers; nothing is written yet. */
  constructor(gang: Gang, conn: ByteStream & { close(): void }, options: SenderOptions) {
    this.#conn = conn;
    const pacer = options.maxBandwidth ? new Pacer(options.maxBandwidth) : undefined;
    this.#answers = new ReceiverAnswers(new FrameReader(conn, ANSWER_BODY_BYTES));
    // Once the target has given up, no write waits any longer (for the pacer above all).
    const targetGone = new AbortController();
    this.#answers.failed.then((error) => targetGone.abort(error));
    const writer = new FrameWriter(conn, {
      pacer,
      stallTimeoutMs: options.stallTimeoutMs ?? 60_000,
      signal: targetGone.signal,
    });
    this.#writer = writer;
    const socket = socketOf(conn);
    this.#socket = socket;
    // Deeper than the kernel makes it, so that the sender works ahead while the link is the
    // bottleneck and the link keeps busy where the cores are (SEND_BUFFER_BYTES).
    socket?.deepenSendBuffer();
    this.compression = new CompressionPolicy(options.compression ?? "auto", {
      get streamBytesPerSecond() {
        return writer.streamBytesPerSecond;
      },
      waits: this.waits,
      socket: () => socket?.read(),
    });
    this.frames = new ChunkFrames(gang, this.compression, (n) => this.#reserve(n), this.waits);
    void this.#answers.run();
  }

  /** Bytes written to the target so far, headers included. */
  get bytesOnWire(): number {
    return this.#writer.bytesWritten;
  }

  /** Writes a frame after every page frame queued before it. */
  async send(frame: Uint8Array): Promise<void> {
    await this.frames.drain();
    (await this.#reserve(frame.length)).set(frame);
  }

  /** Sends every frame queued and buffered, and waits until the stream took them. */
  async flush(): Promise<void> {
    this.#flushedAt = performance.now();
    // A write's failure comes out of #reserve as the target's own error already.
    await this.frames.drain();
    const started = performance.now();
    try {
      await this.#writer.flush();
    } catch (error) {
      throw await this.#betterError(error);
    }
    this.waits.link += (performance.now() - started) / 1000;
  }

  /**
   * Sends a frame that asks the target something, everything before it
   * included, and waits for the answer of type `answer`.
   *
   * @returns the answer's u32 (ROUND_DONE's round, GUEST_VERIFIED's guest...)
   */
  async ask(
    frame: Uint8Array,
    answer: number,
    timeoutMs: number,
  ): Promise<number> {
    await this.send(frame);
    await this.flush();
    return await this.answer(answer, timeoutMs);
  }

  /**
   * The target's next answer, which must be of type `answer`, within
   * `timeoutMs` of the last bytes written reaching it: the kernel tells
   * how many are still on their way (a slow link's socket holds minutes of
   * them), where the socket is known.
   */
  async answer(answer: number, timeoutMs: number): Promise<number> {
    return await this.#answers.expect(
      answer,
      timeoutMs,
      () => this.#socket?.read()?.unacknowledgedBytes,
    );
  }

  /**
   * Sends an ERROR frame with `reason` after everything queued, waiting at
   * most 2 s: the connection may be broken or stalled already. Never throws.
   */
  async tellError(reason: string): Promise<void> {
    const told = (async () => {
      await this.send(encodeText(FrameType.Error, reason));
      await this.flush();
    })();
    await withTimeout(told, 2000, () => new Error("timed out")).catch(() => {});
  }

  /** Flushes when frames may have waited in a half-full buffer for too long (see FLUSH_EVERY_MS). */
  async flushWhenQuiet(): Promise<void> {
    if (performance.now() - this.#flushedAt > FLUSH_EVERY_MS) await this.flush();
  }

  /** Frame room, or the target's own error if the connection broke. */
  async #reserve(bytes: number): Promise<Uint8Array> {
    try {
      return await this.#writer.reserve(bytes);
    } catch (error) {
      throw await this.#betterError(error);
    }
  }

  /**
   * A write failed (often "connection reset"): the target usually said why
   * just before it closed, so wait a moment for its words.
   */
  async #betterError(error: unknown): Promise<Error> {
    const targetError = await Promise.race([
      this.#answers.failed,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 1000)),
    ]);
    if (targetError instanceof TargetError) return targetError;
    return new TargetError(`Cannot send to the target: ${errorMessage(error)}`);
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#conn); // already closed by the peer
    this.frames.close();
  }
}

/** A TCP or TLS connection's socket, if it can be found. */
function socketOf(conn: ByteStream): ConnectionSocket | undefined {
  // A TLS connection's addresses name no transport: a port is what tells TCP.
  const { localAddr, remoteAddr } = conn as {
    localAddr?: { port?: unknown };
    remoteAddr?: { port?: unknown };
  };
  const [local, peer] = [localAddr?.port, remoteAddr?.port];
  if (typeof local !== "number" || typeof peer !== "number") return undefined;
  return ConnectionSocket.find(local, peer);
}
