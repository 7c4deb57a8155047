/**
 * The target side of a gang migration: accepts one gang per connection,
 * writes each guest's RAM to `DIR/<guest-name>` in place (zero pages stay
 * holes), resolves references from contents it already holds, checks every
 * page against its hash, and reports a guest complete only once the
 * digest of its whole RAM matches the source's.
 *
 * A bad peer costs only its own connection: every frame is checked before
 * use and every failure ends that session with an ERROR to the peer.
 *
 * @module
 */
import { join } from "node:path";
import { PAGE_SIZE, type RamFile } from "../native/ram_file.ts";
import { FrameReader, TimeoutError, withTimeout } from "./frame_io.ts";
import {
  badGuestName,
  decodeDone,
  decodeHello,
  decodeRoundEnd,
  encodeText,
  encodeU32,
  FrameType,
  frameTypeName,
  type Hello,
  MAX_BODY_BYTES,
  ProtocolError,
  type WireGuest,
} from "./protocol.ts";
import { openTargetFiles, TargetSession } from "./target_session.ts";

/** Options of {@linkcode receiveGang} and {@linkcode serveGangs}. */
export interface ReceiverOptions {
  /** Directory the guests' RAM files are written to (must exist). */
  dir: string;
  /** Largest guest accepted, in bytes. Default 64 GiB. */
  maxGuestBytes?: number;
  /** Most guests in one gang. Default 256. */
  maxGuests?: number;
  /**
   * Largest gang accepted (sum of its guests), in bytes: bounds the
   * receiver's own memory (16 bytes per page). Default 256 GiB.
   */
  maxGangBytes?: number;
  /** Largest frame body accepted, in bytes. Default {@linkcode MAX_BODY_BYTES} (a full PAGES frame). */
  maxFrameBytes?: number;
  /**
   * Shared secret a sender must present in its HELLO, checked before any
   * other frame is read or any file is opened; none when unset (then any
   * peer that can connect may send a gang).
   */
  token?: string;
  /** Longest time from the connection to a complete handshake (TLS and HELLO). Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * Longest silence of a sender during a migration, and longest wait for it
   * to take an answer. Default 60 s.
   */
  idleTimeoutMs?: number;
  /** Receives a line for each event worth a log. */
  log?: (event: ReceiverEvent) => void;
  /**
   * The only gang accepted, when set: exactly these guests with these
   * sizes, in any order (a target agent's prepared destinations).
   */
  expectedGuests?: readonly WireGuest[];
}

/** Something the receiver did, for its log. */
export type ReceiverEvent =
  | { event: "listening"; address: string }
  | { event: "accepted"; peer: string; guests: { name: string; bytes: number }[] }
  | { event: "round"; peer: string; round: number; final: boolean }
  | {
    event: "complete";
    peer: string;
    guests: { name: string; path: string; digest: string }[];
    bytesRead: number;
    seconds: number;
  }
  | { event: "failed"; peer: string; error: string };

/** A gang received and verified. */
export interface ReceivedGang {
  guests: { name: string; path: string; bytes: number; digest: string }[];
  rounds: number;
  bytesRead: number;
  seconds: number;
}

/** Default limits of a receiver. */
export const RECEIVER_DEFAULTS = {
  maxGuestBytes: 64 * 2 ** 30,
  maxGuests: 256,
  maxGangBytes: 256 * 2 ** 30,
  maxFrameBytes: MAX_BODY_BYTES,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
} as const;

/** Compares two secrets in time that depends on their lengths only. */
export function sameSecret(given: string, expected: string): boolean {
  const a = textEncoder.encode(given);
  const b = textEncoder.encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

const textEncoder = new TextEncoder();

/** Checks a HELLO against the limits; returns why it is refused, or undefined. */
function refusal(hello: Hello, options: ReceiverOptions): string | undefined {
  const maxGuests = options.maxGuests ?? RECEIVER_DEFAULTS.maxGuests;
  const maxBytes = options.maxGuestBytes ?? RECEIVER_DEFAULTS.maxGuestBytes;
  const maxGang = options.maxGangBytes ?? RECEIVER_DEFAULTS.maxGangBytes;
  // The token first: an unauthenticated peer learns nothing about the other limits.
  if (options.token !== undefined && !sameSecret(hello.token, options.token)) {
    return "wrong or missing token";
  }
  if (hello.pageSize !== PAGE_SIZE) return `page size ${hello.pageSize} is not ${PAGE_SIZE}`;
  if (hello.guests.length === 0) return "the gang has no guests";
  if (hello.guests.length > maxGuests) {
    return `${hello.guests.length} guests exceed the limit of ${maxGuests}`;
  }
  const names = new Set<string>();
  let gangBytes = 0;
  for (const { name, size } of hello.guests) {
    const bad = badGuestName(name);
    if (bad) return `guest name ${JSON.stringify(name)} is refused: ${bad}`;
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

/** A connection whose sender has authenticated and whose gang is within the limits. */
interface Handshake {
  conn: Deno.Conn;
  peer: string;
  reader: FrameReader;
  hello: Hello;
  started: number;
}

function isTls(conn: Deno.Conn): conn is Deno.TlsConn {
  return typeof (conn as Partial<Deno.TlsConn>).handshake === "function";
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed by the peer already.
  }
}

/** Writes a whole frame, failing if the peer takes none of it for `timeoutMs`. */
async function writeFrame(conn: Deno.Conn, frame: Uint8Array, timeoutMs: number): Promise<void> {
  for (let done = 0; done < frame.length;) {
    done += await withTimeout(
      conn.write(frame.subarray(done)),
      timeoutMs,
      () => new TimeoutError(`The sender took no data for ${timeoutMs / 1000} s`),
    );
  }
}

/** Logs a failure, tells the peer why (if it can still be told) and closes the connection. */
async function endWithError(
  conn: Deno.Conn,
  peer: string,
  error: unknown,
  options: ReceiverOptions,
  tell: boolean,
): Promise<void> {
  const message = messageOf(error);
  options.log?.({ event: "failed", peer, error: message });
  if (tell) await writeFrame(conn, encodeText(FrameType.Error, message), 2000).catch(() => {});
  closeQuietly(conn);
}

/**
 * The handshake: the TLS handshake (on a TLS connection), then one HELLO
 * frame of bounded size, then the token and the limits, all within the
 * handshake timeout. Nothing else is read and no file is touched before
 * the sender has shown the token. On failure the peer gets an ERROR (when
 * TLS allows it) and the connection is closed.
 */
async function readHandshake(conn: Deno.Conn, options: ReceiverOptions): Promise<Handshake> {
  const peer = peerName(conn);
  const started = performance.now();
  const reader = new FrameReader(conn, options.maxFrameBytes ?? RECEIVER_DEFAULTS.maxFrameBytes);
  const timeoutMs = options.handshakeTimeoutMs ?? RECEIVER_DEFAULTS.handshakeTimeoutMs;
  let canTell = !isTls(conn);
  const steps = async (): Promise<Hello> => {
    if (isTls(conn)) {
      try {
        await conn.handshake();
      } catch (error) {
        const hint = /corrupt message|InvalidContentType/.test(messageOf(error))
          ? " (a sender without TLS? run both sides with TLS, or both with --insecure)"
          : "";
        throw new ProtocolError(`TLS handshake with the sender failed: ${messageOf(error)}${hint}`);
      }
      canTell = true;
    }
    const first = await reader.next(undefined, helloLimit(options));
    if (!first) throw new ProtocolError("Connection closed before the handshake");
    if (first.type !== FrameType.Hello) {
      throw new ProtocolError(`Expected a Hello frame, got ${frameTypeName(first.type)}`);
    }
    return decodeHello(first.body);
  };
  try {
    const hello = await withTimeout(
      steps(),
      timeoutMs,
      () => new TimeoutError(`No handshake within ${timeoutMs / 1000} s`),
    );
    const refused = refusal(hello, options);
    if (refused) throw new ProtocolError(`Gang refused: ${refused}`);
    return { conn, peer, reader, hello, started };
  } catch (error) {
    await endWithError(conn, peer, error, options, canTell);
    throw error;
  }
}

/**
 * Receives the gang of an accepted handshake. On failure the files it
 * created are removed, files that existed are zeroed again (no partial
 * guest stays behind), and the peer gets an ERROR.
 *
 * `release` is called once the target directory is free again (files
 * closed, or discarded), before the last frame to the sender: a sender
 * that starts its next gang as soon as it has that frame never finds the
 * target busy.
 */
async function receiveSession(
  h: Handshake,
  options: ReceiverOptions,
  release: (completed: boolean) => void = () => {},
): Promise<ReceivedGang> {
  const { conn, peer, reader, hello } = h;
  const created: string[] = [];
  const idle = options.idleTimeoutMs ?? RECEIVER_DEFAULTS.idleTimeoutMs;
  let files: RamFile[] = [];
  try {
    files = openTargetFiles(hello, options.dir, created);
    const session = new TargetSession(hello, files);
    options.log?.({
      event: "accepted",
      peer,
      guests: hello.guests.map((g) => ({ name: g.name, bytes: g.size })),
    });
    await writeFrame(conn, encodeU32(FrameType.Welcome, hello.version), idle);

    const digests = await receiveFrames(session, reader, conn, peer, options);
    for (const file of files) file.close();
    const guests = hello.guests.map((g, i) => ({
      name: g.name,
      path: join(options.dir, g.name),
      bytes: g.size,
      digest: digests[i]!,
    }));
    const seconds = (performance.now() - h.started) / 1000;
    options.log?.({ event: "complete", peer, guests, bytesRead: reader.bytesRead, seconds });
    release(true);
    // The gang is complete here whether or not the sender hears it; if it does not, it fails.
    await writeFrame(conn, encodeU32(FrameType.Verified, files.length), idle).catch(() => {});
    return { guests, rounds: session.round, bytesRead: reader.bytesRead, seconds };
  } catch (error) {
    for (const file of files) {
      try {
        if (!created.includes(file.path)) file.punch(0, file.pages);
      } catch {
        // Best effort: the file is being removed or was never written.
      }
      file.close();
    }
    for (const path of created) await Deno.remove(path).catch(() => {});
    release(false);
    await endWithError(conn, peer, error, options, true);
    throw error;
  } finally {
    for (const file of files) file.close();
    closeQuietly(conn);
  }
}

/**
 * Receives one gang over an accepted connection (TCP or TLS): handshake,
 * rounds, verification. Sends an ERROR to the peer and throws on any
 * failure; files it created are removed then.
 *
 * Requires `--allow-ffi` (and `--allow-write` to remove files on failure).
 *
 * @example
 * ```ts
 * using listener = listenForSenders({ hostname: "0.0.0.0", port: 7000 }, { cert, key });
 * const gang = await receiveGang(await listener.accept(), { dir: "/dev/shm/target", token });
 * ```
 */
export async function receiveGang(
  conn: Deno.Conn,
  options: ReceiverOptions,
): Promise<ReceivedGang> {
  return await receiveSession(await readHandshake(conn, options), options);
}

/**
 * Receives a gang whose HELLO frame another server has read already (a
 * target agent, which reads the first frame to tell its connections
 * apart): checks the HELLO and the token as {@linkcode receiveGang} does,
 * then receives the gang.
 *
 * Requires `--allow-ffi` (and `--allow-write` to remove files on failure).
 *
 * @param conn The connection, after its TLS handshake
 * @param reader Its reader, positioned after the HELLO frame
 * @param helloBody The HELLO frame's body
 * @param options The receiver's limits and token
 * @param release Called once the target directory is free again
 */
export async function receiveGangAfterHello(
  conn: Deno.Conn,
  reader: FrameReader,
  helloBody: Uint8Array,
  options: ReceiverOptions,
  release?: (completed: boolean) => void,
): Promise<ReceivedGang> {
  const peer = peerName(conn);
  let hello: Hello;
  try {
    hello = decodeHello(helloBody);
    const refused = refusal(hello, options);
    if (refused) throw new ProtocolError(`Gang refused: ${refused}`);
  } catch (error) {
    await endWithError(conn, peer, error, options, true);
    throw error;
  }
  return await receiveSession(
    { conn, peer, reader, hello, started: performance.now() },
    options,
    release,
  );
}

/** Applies frames until DONE; returns the verified digests. */
async function receiveFrames(
  session: TargetSession,
  reader: FrameReader,
  conn: Deno.Conn,
  peer: string,
  options: ReceiverOptions,
): Promise<string[]> {
  const idle = options.idleTimeoutMs ?? RECEIVER_DEFAULTS.idleTimeoutMs;
  for (;;) {
    const frame = await reader.next(idle);
    if (!frame) {
      throw new ProtocolError("Sender closed the connection before the migration was done");
    }
    switch (frame.type) {
      case FrameType.Pages:
        session.applyPages(frame);
        break;
      case FrameType.Refs:
        session.applyRefs(frame);
        break;
      case FrameType.Zeros:
        session.applyZeros(frame);
        break;
      case FrameType.RoundEnd: {
        const { round, final } = decodeRoundEnd(frame.body);
        if (round !== session.round + 1) {
          throw new ProtocolError(`Round ${round} ended, expected round ${session.round + 1}`);
        }
        session.round = round;
        options.log?.({ event: "round", peer, round, final });
        await writeFrame(conn, encodeU32(FrameType.RoundDone, round), idle);
        break;
      }
      case FrameType.Done: {
        const expected = decodeDone(frame.body, session.files.length);
        const actual = session.digests();
        const bad = session.hello.guests.filter((_, i) => actual[i] !== expected[i]).map((g) =>
          `"${g.name}"`
        );
        if (bad.length > 0) {
          throw new Error(
            `Digest mismatch for guest ${bad.join(", ")}: the copy differs from the source`,
          );
        }
        return actual; // VERIFIED is sent once the files are closed
      }
      case FrameType.Error:
        throw new ProtocolError(`Sender gave up: ${new TextDecoder().decode(frame.body)}`);
      default:
        throw new ProtocolError(`Unexpected ${frameTypeName(frame.type)} frame`);
    }
  }
}

function peerName(conn: Deno.Conn): string {
  const addr = conn.remoteAddr;
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

/** Options of {@linkcode serveGangs}. */
export interface ServeOptions extends ReceiverOptions {
  /** Stop after the first gang received completely. */
  once?: boolean;
  /** Stops the server. */
  signal?: AbortSignal;
  /** Connections allowed in their handshake at once; more are closed at once. Default 16. */
  maxPendingHandshakes?: number;
}

/**
 * Accepts senders one gang at a time. Connections shake hands in parallel
 * (at most `maxPendingHandshakes`, each within the handshake timeout), so a
 * peer that connects and says nothing blocks nobody; a sender that has
 * authenticated while a gang is in progress is refused as busy. A failed
 * session is logged and the server goes on.
 *
 * Requires `--allow-net`, `--allow-ffi`, `--allow-write`.
 *
 * @returns the gangs received (only the first with `once`)
 */
export async function serveGangs(
  listener: Deno.Listener,
  options: ServeOptions,
): Promise<ReceivedGang[]> {
  const received: ReceivedGang[] = [];
  const maxPending = options.maxPendingHandshakes ?? 16;
  const shaking = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let busy = false;
  let stopping = false;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  options.signal?.addEventListener("abort", () => done(), { once: true });

  const serve = async (conn: Deno.Conn) => {
    shaking.add(conn);
    let handshake: Handshake;
    try {
      handshake = await readHandshake(conn, options);
    } catch {
      return; // logged and answered by readHandshake
    } finally {
      shaking.delete(conn);
    }
    if (busy || stopping) {
      const why = stopping ? "Target is shutting down" : "Target is busy with another gang";
      await endWithError(conn, handshake.peer, new Error(why), options, true);
      return;
    }
    busy = true;
    let released = false;
    const release = (completed: boolean) => {
      if (released) return;
      released = true;
      if (completed && options.once) stopping = true;
      busy = false;
    };
    try {
      received.push(await receiveSession(handshake, options, release));
      if (options.once) done();
    } catch {
      // Logged by receiveSession; the server goes on.
    } finally {
      release(false);
    }
  };

  const acceptLoop = (async () => {
    for await (const conn of listener) {
      if (shaking.size >= maxPending) {
        options.log?.({
          event: "failed",
          peer: peerName(conn),
          error: `Too many connections in their handshake (limit ${maxPending})`,
        });
        closeQuietly(conn);
        continue;
      }
      const task = serve(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  await finished;
  stopping = true;
  listener.close();
  await acceptLoop;
  for (const conn of shaking) closeQuietly(conn);
  await Promise.all(tasks);
  return received;
}
