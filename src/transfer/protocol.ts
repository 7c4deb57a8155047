/**
 * The gangway wire protocol, version {@linkcode PROTOCOL_VERSION} (its security is described in
 * docs/security.md).
 *
 * Every message is a frame: an 8-byte header (type, flags, guest, body
 * length, little-endian) and a body whose length the header states. The
 * protocol's modules hold the one definition of every frame's layout:
 * encoders for the sender, decoders for the receiver, both checking every
 * length before they touch a byte. This one has the header, the frame
 * types and the small control frames (ERROR, WELCOME, ROUND_END, ...);
 * the handshake is in `hello_frame.ts`, the frames that carry pages in
 * `page_frames.ts`, the digests of the verification in `digests.ts`.
 *
 * @module
 */
import { PAGE_SIZE } from "../native/ram_file.ts";
import { printable } from "../_printable.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The protocol version this code speaks. 5: pages may come as their
 * difference from a similar page (DELTAS); 4: a guest may be finished alone
 * (GUEST_DONE, GUEST_VERIFIED) while the others go on; 3: PAGES frames may
 * carry their data compressed (see {@linkcode FrameFlag}); since 2 the
 * digests of DONE are keyed by each guest's size as well (see
 * `guestDigest`).
 */
export const PROTOCOL_VERSION = 6;

/** "GWAY" as a little-endian u32: the first field of a HELLO. */
export const MAGIC = 0x59415747;

/** Bytes of a frame header. */
export const HEADER_BYTES = 8;

/** Largest PAGES frame: 1024 pages with their entries. */
export const MAX_PAGES_PER_FRAME = 1024;

/** Largest frame body either side accepts (a full DELTAS frame, with room to spare). */
export const MAX_BODY_BYTES = MAX_PAGES_PER_FRAME * (PAGE_SIZE + 8) + 4096;

/** Header flags. */
export const FrameFlag = {
  /** PAGES and DELTAS only: the page data is one zstd frame (the entries are not compressed). */
  Compressed: 1,
} as const;

/** Frame types. Sender to receiver unless noted. */
export const FrameType = {
  /** Opens a session: version, gang, hash seed, token. */
  Hello: 1,
  /** Receiver: the gang is accepted. */
  Welcome: 2,
  /** Either side: a fatal error, as text; the connection closes after it. */
  Error: 3,
  /** Pages with their content, each bringing a new content id. */
  Pages: 10,
  /** Pages whose content the target already holds: (page, content id) pairs. */
  Refs: 11,
  /** Runs of pages that became zero. */
  Zeros: 12,
  /**
   * Pages each bringing a new content id, as PAGES does, whose data is the
   * word-wise difference from a content the target holds (the base).
   */
  Deltas: 13,
  /** End of a pre-copy round. */
  RoundEnd: 20,
  /** Receiver: every frame of that round is applied. */
  RoundDone: 21,
  /** End of the migration: the digest of each guest's RAM. */
  Done: 30,
  /** Receiver: every guest's digest matched; the gang is complete. */
  Verified: 31,
  /**
   * One guest's RAM is final (its source is paused): its digest. The
   * target never writes that guest's file again, nor copies from it.
   */
  GuestDone: 32,
  /** Receiver: that guest's digest matched (u32 guest number). */
  GuestVerified: 33,
  /** Target agent, either side: a JSON request or answer (docs/agent.md). */
  Control: 40,
  /** Target agent, source to agent: a piece of a file announced by a `put` request. */
  FileData: 41,
  /** Target agent: opens (and, from the agent, accepts) a connection carrying a guest's device state. */
  DeviceState: 42,
  /** Target agent: opens (and, from the agent, accepts) a connection carrying NBD to a guest's copied disk. */
  DiskCopy: 43,
} as const;

/** A frame type number. */
export type FrameTypeValue = typeof FrameType[keyof typeof FrameType];

const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

/** The name of a frame type, for messages. */
export function frameTypeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `unknown type ${type}`;
}

/** A protocol violation: the peer sent something this version cannot accept. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** A decoded frame header plus its body (a view, valid until the next read). */
export interface Frame {
  type: number;
  flags: number;
  guest: number;
  body: Uint8Array;
}

/** Writes a frame header at `offset` of `view`. */
export function writeHeader(
  view: DataView,
  offset: number,
  type: FrameTypeValue,
  guest: number,
  bodyBytes: number,
  flags = 0,
): void {
  view.setUint8(offset, type);
  view.setUint8(offset + 1, flags);
  view.setUint16(offset + 2, guest, true);
  view.setUint32(offset + 4, bodyBytes, true);
}

/** What a plain-TCP end says when its peer speaks TLS. */
export const TLS_PEER_MESSAGE =
  "The peer speaks TLS, not plain gangway: run both sides with TLS, or both with --insecure";

/**
 * Whether the first bytes (at least 3) of what should be a frame header
 * are the start of a TLS record instead (content type 20-23, version 3.x): a peer that speaks TLS
 * to a plain-TCP end, or the other way round.
 */
export function looksLikeTls(bytes: Uint8Array): boolean {
  return bytes[0]! >= 20 && bytes[0]! <= 23 && bytes[1] === 3 && bytes[2]! <= 4;
}

/** Reads a frame header; throws on a body longer than maxBody or on flags this version lacks. */
export function readHeader(
  bytes: Uint8Array,
  maxBody: number,
): { type: number; flags: number; guest: number; bodyBytes: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const header = {
    type: view.getUint8(0),
    flags: view.getUint8(1),
    guest: view.getUint16(2, true),
    bodyBytes: view.getUint32(4, true),
  };
  if (looksLikeTls(bytes)) throw new ProtocolError(TLS_PEER_MESSAGE);
  if (header.bodyBytes > maxBody) {
    throw new ProtocolError(
      `${
        frameTypeName(header.type)
      } frame of ${header.bodyBytes} bytes exceeds the limit of ${maxBody}`,
    );
  }
  const allowed = header.type === FrameType.Pages || header.type === FrameType.Deltas
    ? FrameFlag.Compressed
    : 0;
  if ((header.flags & ~allowed) !== 0) {
    throw new ProtocolError(
      `${
        frameTypeName(header.type)
      } frame has flags ${header.flags}, which version ${PROTOCOL_VERSION} does not define`,
    );
  }
  return header;
}

/** A cursor over a frame body that refuses to read past its end. */
export class BodyReader {
  #view: DataView;
  #bytes: Uint8Array;
  #offset = 0;
  #what: string;

  constructor(body: Uint8Array, what: string) {
    this.#bytes = body;
    this.#view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    this.#what = what;
  }

  #need(n: number): number {
    const at = this.#offset;
    if (at + n > this.#bytes.length) {
      throw new ProtocolError(
        `${this.#what} frame is truncated (needs ${at + n} bytes, has ${this.#bytes.length})`,
      );
    }
    this.#offset += n;
    return at;
  }

  u8(): number {
    return this.#view.getUint8(this.#need(1));
  }
  u16(): number {
    return this.#view.getUint16(this.#need(2), true);
  }
  u32(): number {
    return this.#view.getUint32(this.#need(4), true);
  }
  u64(): bigint {
    return this.#view.getBigUint64(this.#need(8), true);
  }
  bytes(n: number): Uint8Array {
    const at = this.#need(n);
    return this.#bytes.subarray(at, at + n);
  }
  text(n: number): string {
    try {
      return decoder.decode(this.bytes(n));
    } catch {
      throw new ProtocolError(`${this.#what} frame holds text that is not UTF-8`);
    }
  }
  /** Throws unless every byte was read. */
  end(): void {
    if (this.#offset !== this.#bytes.length) {
      throw new ProtocolError(
        `${this.#what} frame has ${this.#bytes.length - this.#offset} unexpected trailing bytes`,
      );
    }
  }
}

/** A frame around a body made already (guest 0 in the header): the header, then a copy of it. */
export function encodeFrame(type: FrameTypeValue, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length);
  writeHeader(new DataView(out.buffer), 0, type, 0, body.length);
  out.set(body, HEADER_BYTES);
  return out;
}

/** A frame with a text body (ERROR). */
export function encodeText(type: FrameTypeValue, text: string): Uint8Array {
  return encodeFrame(type, encoder.encode(text.slice(0, 4000)));
}

/**
 * The text of an ERROR body (lenient: it is shown, not interpreted), on
 * one line and {@linkcode printable}: a peer's words cannot move the
 * cursor, recolour a terminal, reorder what a log shows, nor add a line of
 * their own to it.
 */
export function decodeText(body: Uint8Array): string {
  return printable(new TextDecoder().decode(body));
}

/** A frame whose body is one u32 (WELCOME: version; ROUND_DONE: round; VERIFIED: guests). */
export function encodeU32(type: FrameTypeValue, value: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + 4);
  const view = new DataView(out.buffer);
  writeHeader(view, 0, type, 0, 4);
  view.setUint32(HEADER_BYTES, value, true);
  return out;
}

/** The u32 of such a body. */
export function decodeU32(body: Uint8Array, what: string): number {
  const r = new BodyReader(body, what);
  const value = r.u32();
  r.end();
  return value;
}

/** A ROUND_END frame. */
export function encodeRoundEnd(round: number, final: boolean): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + 5);
  const view = new DataView(out.buffer);
  writeHeader(view, 0, FrameType.RoundEnd, 0, 5);
  view.setUint32(HEADER_BYTES, round, true);
  view.setUint8(HEADER_BYTES + 4, final ? 1 : 0);
  return out;
}

/** Decodes a ROUND_END body. */
export function decodeRoundEnd(body: Uint8Array): { round: number; final: boolean } {
  const r = new BodyReader(body, "RoundEnd");
  const round = r.u32();
  const final = r.u8();
  r.end();
  if (final > 1) throw new ProtocolError("RoundEnd frame with a bad final flag");
  return { round, final: final === 1 };
}
