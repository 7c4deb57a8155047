/**
 * The handshake's frame: the HELLO a sender opens with (the gang's guests,
 * the seed of its page hashes, the token), and the rule for guest names,
 * which become file names at the target.
 *
 * @module
 */
import {
  BodyReader,
  FrameType,
  HEADER_BYTES,
  MAGIC,
  PROTOCOL_VERSION,
  ProtocolError,
  writeHeader,
} from "./protocol.ts";
import { actsOnTerminal } from "../_printable.ts";

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
 * receiver write outside its directory, nor print what a terminal would
 * act on.
 */
export function badGuestName(name: string): string | undefined {
  if (name.length === 0) return "it is empty";
  if (encoder.encode(name).length > 255) return "it is longer than 255 bytes";
  if (name === "." || name === "..") return `"${name}" is not a file name`;
  // A path first: "../x" is refused for what it is.
  if (/[/\\]/.test(name)) return "it contains a slash or a backslash";
  if (name.startsWith(".")) return "it starts with a dot (reserved for the receiver's own files)";
  // A name is printed in logs and reports: none that could move a terminal's cursor, reorder
  // what it shows or add a line of its own. Other invisible characters stay allowed: joiners
  // belong to emoji and to Persian and Indic words.
  if (actsOnTerminal(name)) {
    return "it contains a control, bidirectional-control or line-separator character";
  }
  return undefined;
}
