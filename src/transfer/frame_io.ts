/**
 * Frames over a byte stream: a reader that checks each header before it
 * waits for the body, and a writer that batches frames into large writes
 * (one write per page is six times slower here), paces them to a bandwidth
 * cap and counts every byte it puts on the wire.
 *
 * @module
 */
import {
  type Frame,
  frameTypeName,
  HEADER_BYTES,
  looksLikeTls,
  MAX_BODY_BYTES,
  ProtocolError,
  readHeader,
  TLS_PEER_MESSAGE,
} from "./protocol.ts";
import type { Pacer } from "./pacer.ts";
import { DecayingRate } from "./decaying_rate.ts";
import { errorMessage } from "../_errors.ts";
import { LoopTimeout, shareEventLoop, withTimeout } from "../_delay.ts";

/** The byte stream both ends use: a Deno.Conn (TCP or TLS) fits. */
export interface ByteStream {
  /** Reads into p; resolves with the bytes read, or null at the end of the stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from p; resolves with the bytes written (maybe fewer than p holds). */
  write(p: Uint8Array): Promise<number>;
}

/** A peer went quiet for longer than allowed. */
export class TimeoutError extends Error {
  /** An error saying how long the peer was quiet and what was awaited. */
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/** Bytes the reader buffers at first; it grows (up to the largest frame) only for a large frame. */
const INITIAL_READ_BYTES = 65536;

/** The connection failed under a read (reset, cut, or a TLS record that did not decrypt). */
export class ConnectionError extends Error {
  /** An error saying what was awaited and why the connection failed. */
  constructor(message: string) {
    super(message);
    this.name = "ConnectionError";
  }
}

/** A read error in words: the error's own message, without rustls's manual links, plus a hint. */
function describeReadError(error: unknown): string {
  const message = errorMessage(error)
    .replace(/: https?:\/\/\S+/g, "");
  if (/decrypt|BadRecordMac/.test(message)) {
    return `${message} (a TLS record failed its integrity check: changed on the wire)`;
  }
  if (/close_notify|reset|broken pipe/i.test(message)) {
    return `${message} (the link was cut or the peer died)`;
  }
  return message;
}

/** Reads frames, one at a time; a frame's body is valid until the next call. */
export class FrameReader {
  #stream: ByteStream;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #maxBody: number;
  /** Bytes read from the stream so far. */
  bytesRead = 0;

  /**
   * Reads frames from a stream.
   *
   * @param stream where the frames come from
   * @param maxBody largest frame body accepted; the buffer grows to it only
   * when such a frame arrives, so an idle or unauthenticated peer costs 64 KiB
   */
  constructor(stream: ByteStream, maxBody = MAX_BODY_BYTES) {
    this.#stream = stream;
    this.#maxBody = maxBody;
    this.#buf = new Uint8Array(Math.min(INITIAL_READ_BYTES, HEADER_BYTES + maxBody));
  }

  /** Makes sure `n` bytes are buffered; false at a clean end of stream before any of them. */
  async #fill(n: number, timeoutMs: number | undefined, what: string): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    if (this.#start + n > this.#buf.length) {
      if (n > this.#buf.length) {
        // Room for this frame and a little of the next one, within the largest frame.
        const size = Math.min(Math.max(n + INITIAL_READ_BYTES, this.#buf.length * 2), n + 2 ** 20);
        const grown = new Uint8Array(size);
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
      } else {
        this.#buf.copyWithin(0, this.#start, this.#end);
      }
      this.#end -= this.#start;
      this.#start = 0;
    }
    // Each read may take timeoutMs: one timer for all of them (see LoopTimeout).
    const timeout = timeoutMs === undefined ? undefined : new LoopTimeout(
      timeoutMs,
      () => new TimeoutError(`No data for ${timeoutMs / 1000} s while waiting for ${what}`),
    );
    try {
      return await this.#readUntil(n, timeout, what);
    } finally {
      timeout?.end();
    }
  }

  /** Reads until `n` bytes are buffered (see #fill), each read under `timeout`. */
  async #readUntil(n: number, timeout: LoopTimeout | undefined, what: string): Promise<boolean> {
    while (this.#end - this.#start < n) {
      let got: number | null;
      try {
        const read = this.#stream.read(this.#buf.subarray(this.#end));
        got = await (timeout ? timeout.wait(read) : read);
      } catch (error) {
        if (error instanceof TimeoutError) throw error;
        throw new ConnectionError(
          `Connection lost while waiting for ${what}: ${describeReadError(error)}`,
        );
      }
      if (got === null) {
        if (this.#end === this.#start) return false;
        const partial = this.#buf.subarray(this.#start, this.#end);
        // A TLS alert record is 7 bytes: shorter than a frame header.
        if (this.bytesRead === partial.length && partial.length >= 3 && looksLikeTls(partial)) {
          throw new ProtocolError(TLS_PEER_MESSAGE);
        }
        throw new ProtocolError(`Connection closed in the middle of ${what}`);
      }
      this.#end += got;
      this.bytesRead += got;
      await shareEventLoop();
    }
    return true;
  }

  /**
   * The next `n` bytes, waited for but not consumed: the next call reads
   * them again. Lets a handshake look into a frame before the frame's
   * length is checked. Null when the stream ends cleanly before any byte.
   *
   * @param n bytes wanted (the buffer grows to hold them)
   * @param timeoutMs longest wait for any byte (undefined: forever)
   * @param what what the bytes are, for the error when the stream ends among them
   */
  async peek(n: number, timeoutMs?: number, what = "a frame"): Promise<Uint8Array | null> {
    if (!(await this.#fill(n, timeoutMs, what))) return null;
    return this.#buf.subarray(this.#start, this.#start + n);
  }

  /**
   * The next frame, or null when the stream ends cleanly between frames.
   *
   * @param timeoutMs longest wait for any byte (undefined: forever)
   * @param maxBody a lower limit on the body for this frame only (a handshake)
   */
  async next(timeoutMs?: number, maxBody = this.#maxBody): Promise<Frame | null> {
    if (!(await this.#fill(HEADER_BYTES, timeoutMs, "a frame header"))) return null;
    const header = readHeader(
      this.#buf.subarray(this.#start, this.#start + HEADER_BYTES),
      Math.min(maxBody, this.#maxBody),
    );
    const what = `a ${frameTypeName(header.type)} frame`;
    if (!(await this.#fill(HEADER_BYTES + header.bodyBytes, timeoutMs, what))) {
      throw new ProtocolError(`Connection closed in the middle of ${what}`);
    }
    const bodyStart = this.#start + HEADER_BYTES;
    this.#start = bodyStart + header.bodyBytes;
    return {
      type: header.type,
      flags: header.flags,
      guest: header.guest,
      body: this.#buf.subarray(bodyStart, this.#start),
    };
  }
}

/** Bytes per write: about 256 framed pages. */
const WRITE_BYTES = 1 << 20;

/** Options of {@linkcode FrameWriter}. */
export interface FrameWriterOptions {
  /** Caps the bytes per second written. */
  pacer?: Pacer;
  /**
   * Longest time one write may make no progress (the peer stopped reading,
   * or the link stalled) before it fails with a {@linkcode TimeoutError}.
   * Default: forever.
   */
  stallTimeoutMs?: number;
  /** Fails the writes (a wait for the pacer included) at once, with its reason, when it aborts. */
  signal?: AbortSignal;
}

/**
 * Batches frames into writes of about 1 MiB. While one buffer is on its
 * way to the socket the next one fills, so scanning overlaps sending.
 */
export class FrameWriter {
  #stream: ByteStream;
  #pacer: Pacer | undefined;
  #stallTimeoutMs: number | undefined;
  #signal: AbortSignal | undefined;
  #buffers = [new Uint8Array(WRITE_BYTES), new Uint8Array(WRITE_BYTES)];
  #current = 0;
  #used = 0;
  #inFlight: Promise<void> = Promise.resolve();
  readonly #streamRate = new DecayingRate();
  /** Bytes written to the stream so far, headers included. */
  bytesWritten = 0;
  /**
   * How fast the stream has been taking the writes lately, in bytes per
   * second (0 until the first write ends): with the socket buffer full,
   * the rate of the link or of the peer, whichever is slower.
   */
  get streamBytesPerSecond(): number {
    return this.#streamRate.bytesPerSecond;
  }

  /**
   * Writes frames to a stream.
   *
   * @param stream where the frames go
   * @param options bandwidth cap and stall timeout
   */
  constructor(stream: ByteStream, options: FrameWriterOptions = {}) {
    this.#stream = stream;
    this.#pacer = options.pacer;
    this.#stallTimeoutMs = options.stallTimeoutMs;
    this.#signal = options.signal;
  }

  /**
   * Room for `bytes` more bytes (a whole frame), to be filled before the
   * next call on this writer.
   */
  async reserve(bytes: number): Promise<Uint8Array> {
    if (bytes > WRITE_BYTES) {
      throw new RangeError(`A frame of ${bytes} bytes is larger than a write`);
    }
    if (this.#used + bytes > WRITE_BYTES) await this.#rotate();
    const buf = this.#buffers[this.#current]!;
    const view = buf.subarray(this.#used, this.#used + bytes);
    this.#used += bytes;
    return view;
  }

  /** Appends a prepared frame. */
  async write(frame: Uint8Array): Promise<void> {
    (await this.reserve(frame.length)).set(frame);
  }

  /** Sends everything buffered and waits until the stream took it. */
  async flush(): Promise<void> {
    await this.#rotate();
    await this.#inFlight;
  }

  /** Starts writing the current buffer and switches to the other one (once it is free). */
  async #rotate(): Promise<void> {
    await this.#inFlight;
    await shareEventLoop();
    if (this.#used === 0) return;
    const chunk = this.#buffers[this.#current]!.subarray(0, this.#used);
    this.#inFlight = this.#writeAll(chunk);
    this.#current ^= 1;
    this.#used = 0;
    // Surface a failed write now rather than at the next rotation.
    this.#inFlight.catch(() => {});
  }

  async #writeAll(chunk: Uint8Array): Promise<void> {
    const started = performance.now();
    await this.#pacer?.take(chunk.length, this.#signal);
    let done = 0;
    while (done < chunk.length) {
      const n = await withTimeout(
        this.#stream.write(chunk.subarray(done)),
        this.#stallTimeoutMs,
        () =>
          new TimeoutError(
            `The peer took no data for ${
              this.#stallTimeoutMs! / 1000
            } s: it stopped reading or the link stalled`,
          ),
      );
      done += n;
      this.bytesWritten += n;
    }
    // A write accepted at once says only "faster than a write per 0.5 ms".
    this.#streamRate.add(chunk.length, Math.max(performance.now() - started, 0.5) / 1000);
  }
}
