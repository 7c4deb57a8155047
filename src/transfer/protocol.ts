/**
 * The gangway wire protocol, version 3 (its security is described in
 * docs/security.md).
 *
 * Every message is a frame: an 8-byte header (type, flags, guest, body
 * length, little-endian) and a body whose length the header states. This
 * module holds the one definition of every frame's layout: encoders for
 * the sender, decoders for the receiver, both checking every length
 * before they touch a byte.
 *
 * @module
 */
import { PAGE_SIZE } from "../native/ram_file.ts";
import { decompress } from "../native/compression.ts";
import { ramDigest } from "../native/hashing.ts";

/**
 * The protocol version this code speaks. 3: PAGES frames may carry their
 * data compressed (see {@linkcode FrameFlag}); since 2 the digests of DONE
 * are keyed by each guest's size as well (see {@linkcode guestDigest}).
 */
export const PROTOCOL_VERSION = 3;

/** "GWAY" as a little-endian u32: the first field of a HELLO. */
export const MAGIC = 0x59415747;

/** Bytes of a frame header. */
export const HEADER_BYTES = 8;

/** Largest PAGES frame: 1024 pages with their entries. */
export const MAX_PAGES_PER_FRAME = 1024;

/** Largest frame body either side accepts (a full PAGES frame, with room to spare). */
export const MAX_BODY_BYTES = MAX_PAGES_PER_FRAME * (PAGE_SIZE + 16) + 4096;

/** Header flags. */
export const FrameFlag = {
  /** PAGES only: the page data is one zstd frame (the entries are not compressed). */
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
  /** End of a pre-copy round. */
  RoundEnd: 20,
  /** Receiver: every frame of that round is applied. */
  RoundDone: 21,
  /** End of the migration: the digest of each guest's RAM. */
  Done: 30,
  /** Receiver: every guest's digest matched; the gang is complete. */
  Verified: 31,
  /** Target agent, either side: a JSON request or answer (docs/agent.md). */
  Control: 40,
  /** Target agent, source to agent: a piece of a file announced by a `put` request. */
  FileData: 41,
  /** Target agent: opens (and, from the agent, accepts) a connection carrying a guest's device state. */
  DeviceState: 42,
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
  const allowed = header.type === FrameType.Pages ? FrameFlag.Compressed : 0;
  if ((header.flags & ~allowed) !== 0) {
    throw new ProtocolError(
      `${
        frameTypeName(header.type)
      } frame has flags ${header.flags}, which version ${PROTOCOL_VERSION} does not define`,
    );
  }
  return header;
}

// ---------------------------------------------------------------------------
// Handshake

/** A guest as the handshake describes it. */
export interface WireGuest {
  /** Plain file name: the target stores the guest's RAM under it. */
  name: string;
  /** RAM size in bytes. */
  size: number;
}

/** What a HELLO carries. */
export interface Hello {
  version: number;
  pageSize: number;
  /** Seed of every page hash of this migration. */
  seed: bigint;
  /** Shared secret the receiver may require ("" when none). */
  token: string;
  guests: WireGuest[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A HELLO frame (header included). */
export function encodeHello(hello: Hello): Uint8Array {
  const token = encoder.encode(hello.token);
  const names = hello.guests.map((g) => encoder.encode(g.name));
  const bodyBytes = 4 + 2 + 2 + 4 + 4 + 8 + 2 + token.length +
    names.reduce((sum, n) => sum + 8 + 2 + n.length, 0);
  const out = new Uint8Array(HEADER_BYTES + bodyBytes);
  const view = new DataView(out.buffer);
  writeHeader(view, 0, FrameType.Hello, 0, bodyBytes);
  let o = HEADER_BYTES;
  view.setUint32(o, MAGIC, true);
  view.setUint16(o + 4, hello.version, true);
  view.setUint16(o + 6, 0, true);
  view.setUint32(o + 8, hello.pageSize, true);
  view.setUint32(o + 12, hello.guests.length, true);
  view.setBigUint64(o + 16, hello.seed, true);
  view.setUint16(o + 24, token.length, true);
  out.set(token, o + 26);
  o += 26 + token.length;
  hello.guests.forEach((guest, i) => {
    view.setBigUint64(o, BigInt(guest.size), true);
    view.setUint16(o + 8, names[i]!.length, true);
    out.set(names[i]!, o + 10);
    o += 10 + names[i]!.length;
  });
  return out;
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

/** Bytes of a HELLO body before its token (magic, version, page size, count, seed, token length). */
export const HELLO_TOKEN_OFFSET = 26;

/** Reads a HELLO's magic and version; refuses other magics and versions. */
function helloVersion(r: BodyReader): number {
  if (r.u32() !== MAGIC) throw new ProtocolError("Not a gangway peer: bad magic in Hello");
  const version = r.u16();
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      `Unsupported protocol version ${version}: this receiver speaks version ${PROTOCOL_VERSION}`,
    );
  }
  return version;
}

/**
 * The byte length of a HELLO's token, from the first
 * {@linkcode HELLO_TOKEN_OFFSET} bytes of its body (magic and version
 * checked): a receiver reads and checks the token before the rest.
 */
export function helloTokenLength(head: Uint8Array): number {
  const r = new BodyReader(head.subarray(0, HELLO_TOKEN_OFFSET), "Hello");
  helloVersion(r);
  r.bytes(HELLO_TOKEN_OFFSET - 8); // reserved, page size, guest count, seed
  return r.u16();
}

/** Decodes a HELLO body; refuses other magics and versions before reading on. */
export function decodeHello(body: Uint8Array): Hello {
  const r = new BodyReader(body, "Hello");
  const version = helloVersion(r);
  r.u16();
  const pageSize = r.u32();
  const count = r.u32();
  const seed = r.u64();
  const token = r.text(r.u16());
  // Each guest takes at least 10 bytes: refuse absurd counts before allocating for them.
  if (count > body.length / 10) {
    throw new ProtocolError(`Hello announces ${count} guests in ${body.length} bytes`);
  }
  const guests: WireGuest[] = [];
  for (let i = 0; i < count; i++) {
    const size = r.u64();
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`Guest ${i} is too large`);
    guests.push({ size: Number(size), name: r.text(r.u16()) });
  }
  r.end();
  return { version, pageSize, seed, token, guests };
}

/**
 * Why a guest name cannot be a file name in the target directory, or
 * undefined when it can: plain names only, so that no peer can make the
 * receiver write outside its directory.
 */
export function badGuestName(name: string): string | undefined {
  if (name.length === 0) return "it is empty";
  if (encoder.encode(name).length > 255) return "it is longer than 255 bytes";
  if (name === "." || name === "..") return `"${name}" is not a file name`;
  if (name.startsWith(".")) return "it starts with a dot (reserved for the receiver's own files)";
  // deno-lint-ignore no-control-regex
  if (/[/\\\x00-\x1f\x7f-\x9f]/.test(name)) {
    return "it contains a slash, a backslash or a control character (C0, DEL or C1)";
  }
  return undefined;
}

/** A frame with a text body (ERROR). */
export function encodeText(type: FrameTypeValue, text: string): Uint8Array {
  const body = encoder.encode(text.slice(0, 4000));
  const out = new Uint8Array(HEADER_BYTES + body.length);
  writeHeader(new DataView(out.buffer), 0, type, 0, body.length);
  out.set(body, HEADER_BYTES);
  return out;
}

/** The text of an ERROR body (lenient: it is shown, not interpreted). */
export function decodeText(body: Uint8Array): string {
  return new TextDecoder().decode(body);
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

// ---------------------------------------------------------------------------
// Page frames: layouts shared by the encoder (sender) and decoder (receiver)

/** Bytes of one PAGES entry: page u32, content id u32, hash u64. */
export const PAGE_ENTRY_BYTES = 16;

/** Body bytes of a PAGES frame of n pages. */
export function pagesBodyBytes(n: number): number {
  return 4 + n * (PAGE_ENTRY_BYTES + PAGE_SIZE);
}

/** A decoded PAGES frame: entries and the page data (views into the frame). */
export interface PagesFrame {
  pages: Uint32Array;
  ids: Uint32Array;
  hashes: BigUint64Array;
  data: Uint8Array;
}

/**
 * Decodes a PAGES body, copying the entries out. The data stays a view of
 * the body, or is decompressed into a new buffer of exactly n pages.
 */
export function decodePages(body: Uint8Array, flags = 0): PagesFrame {
  const r = new BodyReader(body, "Pages");
  const n = r.u32();
  if (n === 0 || n > MAX_PAGES_PER_FRAME) throw new ProtocolError(`Pages frame with ${n} pages`);
  const compressed = (flags & FrameFlag.Compressed) !== 0;
  const entriesEnd = 4 + n * PAGE_ENTRY_BYTES;
  if (compressed ? body.length <= entriesEnd : body.length !== pagesBodyBytes(n)) {
    throw new ProtocolError(
      `Pages frame of ${n} pages has ${body.length} bytes, expected ${
        compressed ? `more than ${entriesEnd}` : pagesBodyBytes(n)
      }`,
    );
  }
  const pages = new Uint32Array(n);
  const ids = new Uint32Array(n);
  const hashes = new BigUint64Array(n);
  for (let i = 0; i < n; i++) {
    pages[i] = r.u32();
    ids[i] = r.u32();
    hashes[i] = r.u64();
  }
  if (!compressed) return { pages, ids, hashes, data: r.bytes(n * PAGE_SIZE) };
  const data = new Uint8Array(n * PAGE_SIZE);
  if (!decompress(r.bytes(body.length - entriesEnd), data)) {
    throw new ProtocolError(`Pages frame of ${n} pages holds no valid zstd data of ${n} pages`);
  }
  return { pages, ids, hashes, data };
}

/** Decodes a body of n fixed pairs of u32 (REFS, ZEROS). */
export function decodePairs(body: Uint8Array, what: string): { a: Uint32Array; b: Uint32Array } {
  const r = new BodyReader(body, what);
  const n = r.u32();
  if (n === 0 || body.length !== 4 + n * 8) {
    throw new ProtocolError(
      `${what} frame of ${n} entries has ${body.length} bytes, expected ${4 + n * 8}`,
    );
  }
  const a = new Uint32Array(n);
  const b = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = r.u32();
    b[i] = r.u32();
  }
  return { a, b };
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

/** Bytes of a digest: XXH3-128. */
export const DIGEST_BYTES = 16;

/**
 * The digest DONE carries for a guest, which both ends compute from the
 * page hashes of what they hold: XXH3-128 over the page hashes, keyed by
 * the migration's seed mixed with the guest's size in bytes. The size
 * counts because the pages alone do not show a size changed within the
 * last page.
 *
 * Requires `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { guestDigest } from "./protocol.ts";
 * import type { Gang } from "../scan/gang.ts";
 *
 * declare const gang: Gang;
 * const digest = guestDigest(gang.index.pageHashes(0), gang.index.seed, gang.guests[0]!.ram.size);
 * ```
 */
export function guestDigest(pageHashes: BigUint64Array, seed: bigint, size: number): string {
  const keyed = (seed ^ (BigInt(size) * 0x9e3779b97f4a7c15n)) & 0xffffffffffffffffn;
  return ramDigest(pageHashes, keyed);
}

/** A DONE frame: one digest per guest, as hex strings in, raw bytes on the wire. */
export function encodeDone(digests: string[]): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + digests.length * DIGEST_BYTES);
  writeHeader(new DataView(out.buffer), 0, FrameType.Done, 0, digests.length * DIGEST_BYTES);
  digests.forEach((hex, i) => {
    for (let b = 0; b < DIGEST_BYTES; b++) {
      out[HEADER_BYTES + i * DIGEST_BYTES + b] = parseInt(hex.slice(2 * b, 2 * b + 2), 16);
    }
  });
  return out;
}

/** Decodes a DONE body of `guests` digests into hex strings. */
export function decodeDone(body: Uint8Array, guests: number): string[] {
  if (body.length !== guests * DIGEST_BYTES) {
    throw new ProtocolError(
      `Done frame has ${body.length} bytes, expected ${guests * DIGEST_BYTES}`,
    );
  }
  return Array.from({ length: guests }, (_, i) =>
    Array.from(
      body.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES),
      (b) => b.toString(16).padStart(2, "0"),
    ).join(""));
}

/** Bytes of a whole PAGES frame of n pages whose data takes `dataBytes` (default: uncompressed). */
export function pagesFrameBytes(n: number, dataBytes = n * PAGE_SIZE): number {
  return HEADER_BYTES + 4 + n * PAGE_ENTRY_BYTES + dataBytes;
}

/**
 * Writes a PAGES frame's header and entries into `out` (exactly
 * {@linkcode pagesFrameBytes} bytes): entry i is (pages[i], ids[i],
 * hashes[i]). The caller writes the data at the returned offset.
 */
export function writePagesHead(
  out: Uint8Array,
  guest: number,
  pages: Uint32Array,
  ids: Uint32Array,
  hashes: BigUint64Array,
  compressed: boolean,
): number {
  const n = pages.length;
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  writeHeader(
    view,
    0,
    FrameType.Pages,
    guest,
    out.length - HEADER_BYTES,
    compressed ? FrameFlag.Compressed : 0,
  );
  view.setUint32(HEADER_BYTES, n, true);
  let o = HEADER_BYTES + 4;
  for (let i = 0; i < n; i++, o += PAGE_ENTRY_BYTES) {
    view.setUint32(o, pages[i]!, true);
    view.setUint32(o + 4, ids[i]!, true);
    view.setBigUint64(o + 8, hashes[i]!, true);
  }
  return o;
}

/**
 * Writes an uncompressed PAGES frame into `out` (exactly
 * {@linkcode pagesFrameBytes}`(n)` bytes): the data of entry i is page
 * slots[i] of src.
 */
export function writePagesFrame(
  out: Uint8Array,
  guest: number,
  pages: Uint32Array,
  ids: Uint32Array,
  hashes: BigUint64Array,
  src: Uint8Array,
  slots: Uint16Array,
): void {
  let o = writePagesHead(out, guest, pages, ids, hashes, false);
  for (let i = 0; i < pages.length; i++, o += PAGE_SIZE) {
    const at = slots[i]! * PAGE_SIZE;
    out.set(src.subarray(at, at + PAGE_SIZE), o);
  }
}

/** Bytes of a whole REFS or ZEROS frame of n entries. */
export function pairsFrameBytes(n: number): number {
  return HEADER_BYTES + 4 + n * 8;
}

/** Writes a REFS ((page, id) pairs) or ZEROS ((first, pages) runs) frame into `out`. */
export function writePairsFrame(
  out: Uint8Array,
  type: typeof FrameType.Refs | typeof FrameType.Zeros,
  guest: number,
  a: Uint32Array,
  b: Uint32Array,
): void {
  const n = a.length;
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  writeHeader(view, 0, type, guest, 4 + n * 8);
  view.setUint32(HEADER_BYTES, n, true);
  for (let i = 0, o = HEADER_BYTES + 4; i < n; i++, o += 8) {
    view.setUint32(o, a[i]!, true);
    view.setUint32(o + 4, b[i]!, true);
  }
}
