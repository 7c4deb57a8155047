/**
 * The target agent's protocol (docs/agent.md). Every connection to an
 * agent is TLS (or plain TCP when both sides insist) on the agent's one
 * port, and its first frame says what it is:
 *
 * - CONTROL `{"op":"hello","version":1,"token":...}`: the control
 *   connection of a source; JSON requests and answers follow, each a
 *   CONTROL frame, answers matched to requests by `id`;
 * - HELLO (the transfer protocol's): the gang's RAM, with the session key
 *   the agent handed out in its `prepare` answer as its token;
 * - DEVICE_STATE `{"key":...,"guest":...}`: one guest's device state; once
 *   the agent answers with a DEVICE_STATE frame, the connection carries
 *   QEMU's migration stream as it is, both ways;
 * - DISK_COPY `{"key":...,"guest":...,"disk":N}`: NBD to one of the
 *   guest's copied disks, the same way (one connection per disk at a time).
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { FrameReader } from "../transfer/frame_io.ts";
import { withTimeout } from "../_delay.ts";
import {
  encodeFrame,
  FrameType,
  type FrameTypeValue,
  ProtocolError,
} from "../transfer/protocol.ts";

/** The version of the control messages. */
export const AGENT_VERSION = 1;
/** Largest CONTROL body (a gang of 256 described guests fits many times). */
export const MAX_CONTROL_BYTES = 2 ** 20;
/** Bytes of file data per FILE_DATA frame. */
export const FILE_PIECE_BYTES = 2 ** 20;

/** A request to the agent. */
export interface Request {
  id: number;
  op: string;
  [field: string]: unknown;
}

/** The agent's answer to a request. */
export type Answer =
  | { id: number; ok: true; [field: string]: unknown }
  | { id: number; ok: false; error: string };

/** The agent said no; the message is the agent's. */
export class AgentError extends Error {
  /** An error carrying the agent's words. */
  constructor(message: string) {
    super(message);
    this.name = "AgentError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A frame whose body is a JSON object. */
export function encodeJson(type: FrameTypeValue, message: object): Uint8Array {
  const body = encoder.encode(JSON.stringify(message));
  if (body.length > MAX_CONTROL_BYTES) {
    throw new ProtocolError(`A control message of ${body.length} bytes is over the limit`);
  }
  return encodeFrame(type, body);
}

/** The JSON object of a CONTROL or DEVICE_STATE body. */
export function decodeJson(body: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(body));
  } catch {
    throw new ProtocolError(`${what} is not JSON text`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** A FILE_DATA frame. */
export function encodeFilePiece(piece: Uint8Array): Uint8Array {
  return encodeFrame(FrameType.FileData, piece);
}

/** Options of a {@linkcode FrameChannel}. */
export interface FrameChannelOptions {
  /** Largest frame body it reads. */
  maxBody: number;
  /** Longest a write may wait for the peer to take some of it: then the connection is closed. */
  writeTimeoutMs: number;
  /**
   * Most bytes of frames waiting to be written (the one being written
   * included) before the connection is closed: a peer that reads nothing
   * must not grow the writer's memory. Default: no bound.
   */
  maxQueuedBytes?: number;
}

/**
 * Frames both ways over one connection: reads through a
 * {@linkcode FrameReader}, writes one whole frame at a time in the order
 * they were asked for. A write that times out, or a queue that grows past
 * its bound, closes the connection: a frame cut short cannot be followed
 * by another, and a peer that stops reading gets no more memory.
 */
export class FrameChannel {
  /** The connection. */
  readonly conn: Deno.Conn;
  /** Reads its frames. */
  readonly reader: FrameReader;
  #writing: Promise<void> = Promise.resolve();
  readonly #writeTimeoutMs: number;
  readonly #maxQueuedBytes: number;
  #queuedBytes = 0;
  #failure: Error | undefined;

  /** A channel over a connection. */
  constructor(conn: Deno.Conn, options: FrameChannelOptions) {
    this.conn = conn;
    this.reader = new FrameReader(conn, options.maxBody);
    this.#writeTimeoutMs = options.writeTimeoutMs;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? Infinity;
  }

  /**
   * Writes a frame after the ones before it.
   *
   * @throws Error when the peer takes none of it for the write timeout, or
   * when too many bytes wait for it already (the connection is closed then)
   */
  write(frame: Uint8Array): Promise<void> {
    if (this.#queuedBytes > 0 && this.#queuedBytes + frame.length > this.#maxQueuedBytes) {
      return Promise.reject(this.#fail(
        new Error(
          `The peer reads too slowly: ${this.#queuedBytes} bytes wait for it, the most it may have`,
        ),
      ));
    }
    this.#queuedBytes += frame.length;
    const write = this.#writing.then(async () => {
      if (this.#failure) throw this.#failure;
      for (let done = 0; done < frame.length;) {
        done += await withTimeout(
          this.conn.write(frame.subarray(done)),
          this.#writeTimeoutMs,
          () => this.#fail(new Error(`The peer took no data for ${this.#writeTimeoutMs / 1000} s`)),
        );
      }
    }).finally(() => (this.#queuedBytes -= frame.length));
    this.#writing = write.catch(() => {});
    return write;
  }

  /** Bytes of frames that wait to be written (the one being written included). */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Why the channel closed the connection itself (a write timed out, too much was queued), if it did. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    closeQuietly(this.conn);
  }

  /** Closes the connection for this reason (the first one stays); returns it. */
  #fail(error: Error): Error {
    this.#failure ??= error;
    this.close();
    return error;
  }
}
