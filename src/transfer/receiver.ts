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
import type { FrameReader } from "./frame_io.ts";
import {
  decodeRoundEnd,
  decodeText,
  encodeU32,
  FrameType,
  frameTypeName,
  ProtocolError,
} from "./protocol.ts";
import { decodeDone } from "./digests.ts";
import { type Hello } from "./hello_frame.ts";
import { ReceiverSession } from "./receiver_session.ts";
import {
  discardTargetFiles,
  openTargetFiles,
  recoverInterruptedGang,
  targetDirError,
  type TargetFile,
} from "./target_files.ts";
import { ReceiveJournal } from "./receive_journal.ts";
import {
  checkReceiverOptions,
  type ReceivedGang,
  RECEIVER_DEFAULTS,
  type ReceiverEvent,
  type ReceiverOptions,
} from "./receiver_options.ts";
import { closeQuietly } from "../_close_quietly.ts";
import {
  abortion,
  endWithError,
  readSenderHandshake,
  type SenderHandshake,
  writeFrame,
} from "./sender_handshake.ts";
import {
  ACCEPT_DEFAULTS,
  acceptConnections,
  addressText,
  peerName,
  type PendingConnection,
} from "./accept_connections.ts";

export { type ReceivedGang, RECEIVER_DEFAULTS, type ReceiverEvent, type ReceiverOptions };
export { readSenderHandshake, recoverInterruptedGang, type SenderHandshake };

/**
 * Receives the gang of a sender that has authenticated (its HELLO read
 * and within the limits, see {@linkcode readSenderHandshake}): welcomes
 * it, applies its rounds and checks every guest's digest. On failure
 * (`options.abandon` aborting is one) the files the gang created are
 * removed, files that were there are zeroed (no partial guest stays
 * behind), the peer gets an ERROR and the promise rejects. The connection
 * is closed either way.
 *
 * `release` is called once the target directory is free again (files
 * closed, or discarded), before the last frame to the sender: a sender
 * that starts its next gang as soon as it has that frame never finds the
 * target busy.
 *
 * Requires `--allow-ffi`, `--allow-read` and `--allow-write` (the directory).
 *
 * @example
 * ```ts
 * import {
 *   readSenderHandshake,
 *   receiveAuthenticatedGang,
 *   type ReceiverOptions,
 * } from "./receiver.ts";
 *
 * declare const conn: Deno.Conn, options: ReceiverOptions;
 * declare function markIdle(): void;
 * const sender = await readSenderHandshake(conn, options);
 * const gang = await receiveAuthenticatedGang(sender, options, () => markIdle());
 * ```
 */
export async function receiveAuthenticatedGang(
  sender: { conn: Deno.Conn; reader: FrameReader; hello: Hello; peer?: string; started?: number },
  options: ReceiverOptions,
  release: (completed: boolean) => void = () => {},
): Promise<ReceivedGang> {
  const { conn, reader, hello } = sender;
  const peer = sender.peer ?? peerName(conn);
  const started = sender.started ?? performance.now();
  const idle = options.idleTimeoutMs ?? RECEIVER_DEFAULTS.idleTimeoutMs;
  let targets: TargetFile[] = [];
  let session: ReceiverSession | undefined;
  let journal: ReceiveJournal | undefined;
  try {
    options.abandon?.throwIfAborted();
    try {
      if (options.journal) journal = ReceiveJournal.create(options.dir, hello.guests.length);
    } catch (error) {
      throw targetDirError(error, options.dir, `Cannot receive into "${options.dir}"`);
    }
    targets = openTargetFiles(hello, options.dir, journal);
    const files = targets.map((t) => t.file);
    session = new ReceiverSession(hello, files);
    options.log?.({
      event: "accepted",
      peer,
      guests: hello.guests.map((g) => ({ name: g.name, bytes: g.size })),
    });
    await writeFrame(conn, encodeU32(FrameType.Welcome, hello.version), idle);

    const digests = await receiveFrames(session, reader, conn, peer, options, journal);
    for (const file of files) file.close();
    journal?.remove(); // verified: nothing left to undo, even if this process dies now
    const guests = hello.guests.map((g, i) => ({
      name: g.name,
      path: join(options.dir, g.name),
      bytes: g.size,
      digest: digests[i]!,
    }));
    const seconds = (performance.now() - started) / 1000;
    options.log?.({ event: "complete", peer, guests, bytesRead: reader.bytesRead, seconds });
    release(true);
    // The gang is complete here whether or not the sender hears it; if it does not, it fails.
    await writeFrame(conn, encodeU32(FrameType.Verified, files.length), idle).catch(() => {});
    return { guests, rounds: session.round, bytesRead: reader.bytesRead, seconds };
  } catch (error) {
    // A finished guest may run here already: its file is its RAM now, never to be discarded.
    const finished = session?.finished;
    discardTargetFiles(targets.filter((_, i) => !finished?.[i]));
    journal?.remove();
    release(false);
    await endWithError(conn, peer, error, options, true);
    throw error;
  } finally {
    for (const { file } of targets) file.close();
    closeQuietly(conn);
  }
}

/**
 * Receives one gang over an accepted connection (TCP or TLS): handshake,
 * rounds, verification. Sends an ERROR to the peer and throws on any
 * failure; files it created are removed then.
 *
 * Requires `--allow-ffi`, `--allow-read` and `--allow-write` (the directory).
 *
 * @example
 * ```ts
 * import { receiveGang } from "./receiver.ts";
 * import { listenForSenders } from "../transport/listen_for_senders.ts";
 *
 * declare const cert: string, key: string, token: string;
 * using listener = listenForSenders({ hostname: "0.0.0.0", port: 7000 }, { cert, key });
 * const gang = await receiveGang(await listener.accept(), { dir: "/dev/shm/target", token });
 * ```
 */
export async function receiveGang(
  conn: Deno.Conn,
  options: ReceiverOptions,
): Promise<ReceivedGang> {
  try {
    checkReceiverOptions(options);
  } catch (error) {
    closeQuietly(conn); // the sender hears of it at once, not after its own timeout
    throw error;
  }
  return await receiveAuthenticatedGang(await readSenderHandshake(conn, options), options);
}

/** Applies frames until DONE (or until `options.abandon` aborts); returns the verified digests. */
async function receiveFrames(
  session: ReceiverSession,
  reader: FrameReader,
  conn: Deno.Conn,
  peer: string,
  options: ReceiverOptions,
  journal: ReceiveJournal | undefined,
): Promise<string[]> {
  const idle = options.idleTimeoutMs ?? RECEIVER_DEFAULTS.idleTimeoutMs;
  const abandoned = abortion(options.abandon);
  for (;;) {
    // Checked between frames too: buffered frames resolve the read before the abort can win.
    options.abandon?.throwIfAborted();
    const frame =
      await (abandoned ? Promise.race([reader.next(idle), abandoned]) : reader.next(idle));
    if (!frame) {
      throw new ProtocolError("Sender closed the connection before the migration was done");
    }
    switch (frame.type) {
      case FrameType.Pages:
      case FrameType.Deltas:
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
      case FrameType.GuestDone: {
        const guest = session.finishGuest(frame);
        journal?.clear(frame.guest); // it may run here now: never undone
        options.log?.({ event: "guest-verified", peer, guest });
        await writeFrame(conn, encodeU32(FrameType.GuestVerified, frame.guest), idle);
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
        throw new ProtocolError(`Sender gave up: ${decodeText(frame.body)}`);
      default:
        throw new ProtocolError(`Unexpected ${frameTypeName(frame.type)} frame`);
    }
  }
}

/** Options of {@linkcode serveGangs}. */
export interface ServeOptions extends ReceiverOptions {
  /** Stop after the first gang received completely. */
  once?: boolean;
  /**
   * Stops the server: it accepts no more senders and returns once the
   * gang in progress, if any, has ended (`abandon` ends it sooner).
   */
  signal?: AbortSignal;
  /**
   * Connections allowed in their handshake at once; when a new one comes,
   * the oldest gives way (see `acceptConnections`). Default 16.
   */
  maxPendingHandshakes?: number;
  /** Connections allowed in their handshake at once from one address. Default 8. */
  maxPendingPerAddress?: number;
}

/**
 * Accepts senders one gang at a time. Connections shake hands in parallel
 * (a bounded number, each within the handshake timeout; when all slots
 * are taken the oldest pending handshake gives way), so peers that
 * connect and say nothing keep no sender out; a sender that has
 * authenticated while a gang is in progress is refused as busy. A failed
 * session is logged and the server goes on; so does a failed accept (out
 * of descriptors), after a short back-off.
 *
 * Each gang keeps a journal of its files in the directory while it runs
 * (`options.journal`), and the server first undoes the gang an earlier
 * server of the directory was receiving when it was killed
 * ({@linkcode recoverInterruptedGang}, logged as `recovered`), and only
 * then logs `listening`. Only one server may use a directory at a time
 * (lock it first, as `receive` does, with `lockDirectory`). `options.abandon` ends the gang in progress as a
 * failed one and stops the server.
 *
 * Requires `--allow-net`, `--allow-ffi`, `--allow-read`, `--allow-write`.
 *
 * @returns the gangs received (only the first with `once`)
 */
export async function serveGangs(
  listener: Deno.Listener,
  options: ServeOptions,
): Promise<ReceivedGang[]> {
  checkReceiverOptions(options);
  const recovered = recoverInterruptedGang(options.dir);
  if (recovered.length > 0) options.log?.({ event: "recovered", guests: recovered });
  // Only now: a journal it cannot read ends the server, and nobody may have seen it up.
  options.log?.({ event: "listening", address: addressText(listener.addr) });
  const gangOptions: ReceiverOptions = { ...options, journal: true };
  const received: ReceivedGang[] = [];
  const stop = new AbortController();
  let busy = false;
  let stopping = false;
  const onAbort = () => stop.abort();
  const signals = [options.signal, options.abandon];
  if (signals.some((signal) => signal?.aborted)) stop.abort();
  for (const signal of signals) signal?.addEventListener("abort", onAbort, { once: true });

  const serve = async ({ conn, signal, handshakeDone }: PendingConnection) => {
    let handshake: SenderHandshake;
    try {
      handshake = await readSenderHandshake(conn, options, signal);
    } catch {
      return; // logged and answered by readSenderHandshake
    }
    handshakeDone();
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
      received.push(await receiveAuthenticatedGang(handshake, gangOptions, release));
      if (options.once) stop.abort();
    } catch {
      // Logged by receiveAuthenticatedGang; the server goes on.
    } finally {
      release(false);
    }
  };

  try {
    await acceptConnections(listener, serve, {
      maxPendingHandshakes: options.maxPendingHandshakes ?? ACCEPT_DEFAULTS.maxPendingHandshakes,
      maxPendingPerAddress: options.maxPendingPerAddress ?? ACCEPT_DEFAULTS.maxPendingPerAddress,
      signal: stop.signal,
      log: options.log,
    });
  } finally {
    stopping = true;
    for (const signal of signals) signal?.removeEventListener("abort", onAbort);
  }
  return received;
}
