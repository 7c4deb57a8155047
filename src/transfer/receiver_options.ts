/**
 * What a receiver is told (limits, timeouts, the token, its log) and what
 * it says back: shared by the handshake, the session and the server loop.
 *
 * @module
 */
import { MAX_BODY_BYTES } from "./protocol.ts";
import { type WireGuest } from "./hello_frame.ts";
import type { AcceptEvent } from "./accept_connections.ts";
import { checkTimeout } from "../_delay.ts";

/** Options of `receiveGang` and `serveGangs`. */
export interface ReceiverOptions {
  /** Directory the guests' RAM files are written to (must exist). */
  dir: string;
  /** Largest guest accepted, in bytes. Default 64 GiB. */
  maxGuestBytes?: number;
  /** Most guests in one gang. Default 256, at most {@linkcode MAX_GUESTS}. */
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
  /**
   * Abandons the gang in progress when it aborts: the gang fails as any
   * failed gang does (its files undone, the sender told the reason).
   */
  abandon?: AbortSignal;
  /**
   * Keeps a journal of the files the gang is receiving in `dir` while it
   * runs (`.gangway-receiving`), from which `recoverInterruptedGang` undoes
   * them if this process is killed mid-gang. `serveGangs` always keeps one.
   * Default false.
   */
  journal?: boolean;
}

/** Something the receiver did, for its log. */
export type ReceiverEvent =
  | { event: "listening"; address: string }
  | { event: "accepted"; peer: string; guests: { name: string; bytes: number }[] }
  | { event: "round"; peer: string; round: number; final: boolean }
  | { event: "guest-verified"; peer: string; guest: string }
  | {
    event: "complete";
    peer: string;
    guests: { name: string; path: string; digest: string }[];
    bytesRead: number;
    seconds: number;
  }
  | { event: "failed"; peer: string; error: string }
  | { event: "recovered"; guests: string[] }
  | AcceptEvent;

/** A gang received and verified. */
export interface ReceivedGang {
  /** Each guest's name, RAM file, size in bytes and digest, in gang order. */
  guests: { name: string; path: string; bytes: number; digest: string }[];
  /** Rounds received. */
  rounds: number;
  /** Bytes read from the sender. */
  bytesRead: number;
  /** From the connection to the verification. */
  seconds: number;
}

/**
 * The most guests a receiver may be set to take in one gang: its
 * journal (a page per guest) is read whole at its next start, so a
 * larger one is none it wrote.
 */
export const MAX_GUESTS = 65_536;

/** Default limits of a receiver. */
export const RECEIVER_DEFAULTS = {
  maxGuestBytes: 64 * 2 ** 30,
  maxGuests: 256,
  maxGangBytes: 256 * 2 ** 30,
  maxFrameBytes: MAX_BODY_BYTES,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
} as const;

/**
 * Throws a RangeError naming the first option out of its range: a timeout
 * a timer cannot wait (0, or over 24.8 days), a limit that is not a
 * positive integer (a NaN or a string would turn it off, a negative one
 * would refuse every gang as the sender's fault), `maxGuests` over
 * {@linkcode MAX_GUESTS}, an empty token (leave it out for none). Checked
 * where a receiver takes its options, before any connection is read.
 */
export function checkReceiverOptions(options: ReceiverOptions): void {
  checkTimeout(options.handshakeTimeoutMs, "handshakeTimeoutMs");
  checkTimeout(options.idleTimeoutMs, "idleTimeoutMs");
  const { maxGuests } = options;
  if (
    maxGuests !== undefined &&
    !(Number.isInteger(maxGuests) && maxGuests >= 1 && maxGuests <= MAX_GUESTS)
  ) {
    throw new RangeError(
      `maxGuests must be an integer from 1 to ${MAX_GUESTS}, not ${JSON.stringify(maxGuests)}`,
    );
  }
  for (const name of ["maxGuestBytes", "maxGangBytes", "maxFrameBytes"] as const) {
    const limit = options[name];
    if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1)) {
      throw new RangeError(`${name} must be a positive integer, not ${JSON.stringify(limit)}`);
    }
  }
  if (options.token !== undefined && (typeof options.token !== "string" || options.token === "")) {
    throw new RangeError("token must be a non-empty string (left out: no token is required)");
  }
}
