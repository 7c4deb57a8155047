/**
 * The receiver's side of a sender's handshake: the TLS handshake, then the
 * token of the HELLO, then the rest of the HELLO and the receiver's
 * limits. With a token required, the token is read and checked first,
 * from a bounded prefix of the HELLO, before the frame's length or any
 * other field is judged: a peer without the token is told one generic
 * refusal and learns nothing about the limits (the log says why).
 *
 * @module
 */
import { PAGE_SIZE } from "../native/ram_file.ts";
import { FrameReader, TimeoutError } from "./frame_io.ts";
import { withTimeout } from "../_delay.ts";
import {
  BodyReader,
  encodeText,
  FrameType,
  frameTypeName,
  HEADER_BYTES,
  ProtocolError,
  readHeader,
} from "./protocol.ts";
import {
  badGuestName,
  decodeHello,
  type Hello,
  HELLO_TOKEN_OFFSET,
  helloTokenLength,
} from "./hello_frame.ts";
import { RECEIVER_DEFAULTS, type ReceiverOptions } from "./receiver_options.ts";
import { peerName } from "./accept_connections.ts";
import { errorMessage } from "../_errors.ts";
import { printable } from "../_printable.ts";
import { closeQuietly } from "../_close_quietly.ts";

/** A connection whose sender has authenticated and whose gang is within the limits. */
export interface SenderHandshake {
  conn: Deno.Conn;
  /** "host:port" of the sender, for the log. */
  peer: string;
  /** The connection's frame reader, positioned after the HELLO. */
  reader: FrameReader;
  hello: Hello;
  /** performance.now() at the connection. */
  started: number;
}

/** What an unauthenticated peer is told, whatever was wrong. */
export const TOKEN_REFUSAL = "Gang refused: wrong or missing token";

/** Most bytes of a token on the wire: 1024 characters (the most a token file holds) of UTF-8. */
const MAX_TOKEN_WIRE_BYTES = 4096;

/** What a peer with the token that speaks to this receiver as to a target agent is told. */
export const NOT_AN_AGENT = "This is a gangway receive server, which takes gangs from `send`; " +
  "migrating QEMU guests (evacuate, migrateQemuGang) needs a target agent there: `deno task agent`";

/** Largest agent request read to tell its sender it came to the wrong server: its hello is small. */
const MAX_AGENT_HELLO_BYTES = 65536;

/** Compares two secrets in time that depends on their lengths only. */
export function sameSecret(given: Uint8Array, expected: Uint8Array): boolean {
  let diff = given.length ^ expected.length;
  for (let i = 0; i < Math.max(given.length, expected.length); i++) {
    diff |= (given[i] ?? 0) ^ (expected[i] ?? 0);
  }
  return diff === 0;
}

/** Checks an authenticated HELLO against the limits; returns why it is refused, or undefined. */
function refusal(hello: Hello, options: ReceiverOptions): string | undefined {
  const maxGuests = options.maxGuests ?? RECEIVER_DEFAULTS.maxGuests;
  const maxBytes = options.maxGuestBytes ?? RECEIVER_DEFAULTS.maxGuestBytes;
  const maxGang = options.maxGangBytes ?? RECEIVER_DEFAULTS.maxGangBytes;
  if (hello.pageSize !== PAGE_SIZE) return `page size ${hello.pageSize} is not ${PAGE_SIZE}`;
  if (hello.guests.length === 0) return "the gang has no guests";
  if (hello.guests.length > maxGuests) {
    return `${hello.guests.length} guests exceed the limit of ${maxGuests}`;
  }
  const names = new Set<string>();
  let gangBytes = 0;
  for (const { name, size } of hello.guests) {
    const bad = badGuestName(name);
    if (bad) return `guest name ${printable(JSON.stringify(name))} is refused: ${bad}`;
    if (names.has(name)) return `two guests are named "${name}"`;
    names.add(name);
    if (size <= 0) return `guest "${name}" has no RAM`;
    if (size > maxBytes) return `guest "${name}" has ${size} bytes, over the limit of ${maxBytes}`;
    gangBytes += size;
  }
  if (gangBytes > maxGang) {
    return `the gang has ${gangBytes} bytes, over the limit of ${maxGang}`;
  }
  const expected = options.expectedGuests;
  if (expected) {
    const sizes = new Map(expected.map((g) => [g.name, g.size]));
    const wrong = hello.guests.find((g) => sizes.get(g.name) !== g.size);
    if (wrong || hello.guests.length !== expected.length) {
      return "its guests are not the ones whose destinations were prepared" +
        (wrong ? ` ("${wrong.name}")` : "");
    }
  }
  return undefined;
}

/** Largest HELLO body accepted: the fields, a token and every guest with a 255-byte name. */
function helloLimit(options: ReceiverOptions): number {
  return 65536 + (options.maxGuests ?? RECEIVER_DEFAULTS.maxGuests) * (10 + 255);
}

function isTls(conn: Deno.Conn): conn is Deno.TlsConn {
  return typeof (conn as Partial<Deno.TlsConn>).handshake === "function";
}

/** Writes a whole frame, failing if the peer takes none of it for `timeoutMs`. */
export async function writeFrame(
  conn: Deno.Conn,
  frame: Uint8Array,
  timeoutMs: number,
): Promise<void> {
  for (let done = 0; done < frame.length;) {
    done += await withTimeout(
      conn.write(frame.subarray(done)),
      timeoutMs,
      () => new TimeoutError(`The sender took no data for ${timeoutMs / 1000} s`),
    );
  }
}

/**
 * Logs a failure, tells the peer (if it can still be told) and closes the
 * connection. The peer is told `told` when given, else the error itself.
 */
export async function endWithError(
  conn: Deno.Conn,
  peer: string,
  error: unknown,
  options: ReceiverOptions,
  tell: boolean,
  told?: string,
): Promise<void> {
  const message = errorMessage(error);
  options.log?.({ event: "failed", peer, error: message });
  if (tell) {
    await writeFrame(conn, encodeText(FrameType.Error, told ?? message), 2000).catch(() => {});
    await drainBeforeClose(conn, 2000);
  }
  closeQuietly(conn);
}

/**
 * Shuts the write side and reads (dropping it) whatever the peer still
 * sends, until it closes or for `ms` at most. Closing a socket with unread
 * data resets the connection, and a reset makes the peer's kernel drop what
 * it has not read yet: the ERROR just written would be lost to a sender
 * still busy writing.
 */
async function drainBeforeClose(conn: Deno.Conn, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  const scratch = new Uint8Array(65536);
  try {
    await conn.closeWrite();
    for (let left = ms; left > 0; left = deadline - performance.now()) {
      const got = await withTimeout(conn.read(scratch), left, () => new TimeoutError("drained"));
      if (got === null) return;
    }
  } catch {
    // Closed, reset, busy with another read, or out of time: close it now.
  }
}

/** Rejects with the signal's reason once it aborts (never rejects unobserved). */
export function abortion(signal: AbortSignal | undefined): Promise<never> | undefined {
  if (!signal) return undefined;
  const aborted = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  aborted.catch(() => {});
  return aborted;
}

/**
 * Reads a sender's handshake: the TLS handshake (on a TLS connection),
 * the HELLO's token (checked first, when the receiver requires one), the
 * rest of the HELLO (of bounded size) and the limits, all within the
 * handshake timeout. Nothing else is read and no file is touched. On
 * failure, or when `signal` aborts, the peer gets an ERROR (when TLS allows
 * it) and the connection is closed; the promise rejects.
 *
 * @param signal gives up the handshake (its slot was needed, the server stops)
 * @param reader the connection's reader, when a server peeked at it already (a target agent)
 */
export async function readSenderHandshake(
  conn: Deno.Conn,
  options: ReceiverOptions,
  signal?: AbortSignal,
  reader = new FrameReader(conn, options.maxFrameBytes ?? RECEIVER_DEFAULTS.maxFrameBytes),
): Promise<SenderHandshake> {
  const peer = peerName(conn);
  const started = performance.now();
  const timeoutMs = options.handshakeTimeoutMs ?? RECEIVER_DEFAULTS.handshakeTimeoutMs;
  const token = options.token === undefined ? undefined : new TextEncoder().encode(options.token);
  let canTell = !isTls(conn);
  // Until the token matched, the peer is told TOKEN_REFUSAL whatever went wrong.
  let told: string | undefined = token === undefined ? undefined : TOKEN_REFUSAL;
  const steps = async (): Promise<Hello> => {
    if (isTls(conn)) {
      try {
        await conn.handshake();
      } catch (error) {
        const hint = /corrupt message|InvalidContentType/.test(errorMessage(error))
          ? " (a sender without TLS? run both sides with TLS, or both with --insecure)"
          : "";
        throw new ProtocolError(
          `TLS handshake with the sender failed: ${errorMessage(error)}${hint}`,
        );
      }
      canTell = true;
    }
    const head = await reader.peek(HEADER_BYTES, undefined, "a frame header");
    if (!head) throw new ProtocolError("Connection closed before the handshake");
    // Without a token to check, everyone may know the limits: the length is checked at once.
    const header = readHeader(head, token === undefined ? helloLimit(options) : 2 ** 32);
    if (header.type === FrameType.Control && header.bodyBytes <= MAX_AGENT_HELLO_BYTES) {
      await refuseAgentClient(reader, token, () => (told = undefined));
    }
    if (header.type !== FrameType.Hello) {
      throw new ProtocolError(`Expected a Hello frame, got ${frameTypeName(header.type)}`);
    }
    if (token !== undefined) {
      await checkToken(reader, header.bodyBytes, token, () => (told = undefined));
      told = undefined;
    }
    const hello = await reader.next(undefined, helloLimit(options));
    return decodeHello(hello!.body);
  };
  try {
    const aborted = abortion(signal);
    const hello = await withTimeout(
      aborted ? Promise.race([steps(), aborted]) : steps(),
      timeoutMs,
      () => new TimeoutError(`No handshake within ${timeoutMs / 1000} s`),
    );
    const refused = refusal(hello, options);
    if (refused) throw new ProtocolError(`Gang refused: ${refused}`);
    return { conn, peer, reader, hello, started };
  } catch (error) {
    await endWithError(conn, peer, error, options, canTell, told);
    throw error;
  }
}

/**
 * Reads the request of a target agent's client (a CONTROL frame, whose
 * header was peeked) and throws: one that carries the token is told
 * {@linkcode NOT_AN_AGENT} (`tell`), so that evacuate pointed at this
 * server says what is wrong; one without it learns nothing.
 */
async function refuseAgentClient(
  reader: FrameReader,
  token: Uint8Array | undefined,
  tell: () => void,
): Promise<never> {
  const frame = await reader.next(undefined, MAX_AGENT_HELLO_BYTES);
  if (!frame) throw new ProtocolError("Connection closed before the handshake");
  let given: unknown;
  try {
    given = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame.body))?.token;
  } catch {
    // Not JSON: refused as any other frame.
  }
  if (
    token === undefined ||
    (typeof given === "string" && sameSecret(new TextEncoder().encode(given), token))
  ) {
    tell();
    throw new ProtocolError(NOT_AN_AGENT);
  }
  throw new ProtocolError(TOKEN_REFUSAL);
}

/**
 * Reads the token of the HELLO whose header was peeked (without consuming
 * anything) and compares it with the required one; throws why not.
 */
async function checkToken(
  reader: FrameReader,
  bodyBytes: number,
  token: Uint8Array,
  tellVersionErrors: () => void,
) {
  const what = "a Hello frame";
  if (bodyBytes < HELLO_TOKEN_OFFSET) {
    throw new ProtocolError(`Hello frame of ${bodyBytes} bytes is too short for a token`);
  }
  const head = await reader.peek(HEADER_BYTES + HELLO_TOKEN_OFFSET, undefined, what);
  let length: number;
  try {
    length = helloTokenLength(head!.subarray(HEADER_BYTES));
  } catch (error) {
    // Another magic or version says nothing about this receiver's settings, and a
    // sender of another version must learn why it is refused.
    tellVersionErrors();
    throw error;
  }
  if (length > MAX_TOKEN_WIRE_BYTES || HELLO_TOKEN_OFFSET + length > bodyBytes) {
    throw new ProtocolError(`${TOKEN_REFUSAL} (a token of ${length} bytes)`);
  }
  const prefix = await reader.peek(HEADER_BYTES + HELLO_TOKEN_OFFSET + length, undefined, what);
  const given = prefix!.subarray(HEADER_BYTES + HELLO_TOKEN_OFFSET);
  new BodyReader(given, "Hello").text(length); // the same UTF-8 rule as decodeHello
  if (!sameSecret(given, token)) throw new ProtocolError(TOKEN_REFUSAL);
}
