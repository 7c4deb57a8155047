/**
 * The verification: each guest's RAM digest, computed by both ends from the
 * page hashes of what they hold, and the DONE frame that carries them.
 *
 * @module
 */
import { contentsDigest, digestHex, ramDigest } from "../native/hashing.ts";
import { type TargetContents, ZERO } from "../plan/target_contents.ts";
import { FrameType, HEADER_BYTES, ProtocolError, writeHeader } from "./protocol.ts";

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
 * import { guestDigest } from "./digests.ts";
 * import type { Gang } from "../scan/gang.ts";
 *
 * declare const gang: Gang;
 * const digest = guestDigest(gang.index.pageHashes(0), gang.index.seed, gang.guests[0]!.ram.size);
 * ```
 */
export function guestDigest(pageHashes: BigUint64Array, seed: bigint, size: number): string {
  return ramDigest(pageHashes, guestKey(seed, size));
}

/**
 * {@linkcode guestDigest} of a guest as a target holds it: the hashes of
 * its pages' contents, `zeroHash` for its zero pages.
 *
 * Requires `--allow-ffi`.
 */
export function heldGuestDigest(
  target: TargetContents,
  guest: number,
  zeroHash: bigint,
  seed: bigint,
  size: number,
): string {
  return digestHex(
    contentsDigest(
      target.guestContents(guest),
      target.contentHashes(),
      { id: ZERO, hash: zeroHash },
      guestKey(seed, size),
    ),
  );
}

/** The seed of a guest's digest: the migration's, mixed with the guest's size. */
function guestKey(seed: bigint, size: number): bigint {
  return (seed ^ (BigInt(size) * 0x9e3779b97f4a7c15n)) & 0xffffffffffffffffn;
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

/** A GUEST_DONE frame: one guest's digest, the guest in the header. */
export function encodeGuestDone(guest: number, digest: string): Uint8Array {
  const out = encodeDone([digest]);
  writeHeader(new DataView(out.buffer), 0, FrameType.GuestDone, guest, DIGEST_BYTES);
  return out;
}

/** Decodes a DONE body of `guests` digests into hex strings (a GUEST_DONE body is one). */
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
