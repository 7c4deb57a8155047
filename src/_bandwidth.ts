/**
 * The bandwidth caps gangway takes (a sender's `maxBandwidth`, the
 * `--max-bandwidth` flags): the one rule, shared by the library and the
 * command lines.
 *
 * @module
 */

/**
 * The lowest bandwidth cap taken, in bytes per second: a frame (up to 512
 * KiB of pages) then takes 32 s at most, half a target's default idle
 * timeout; under it a target would drop a sender that is only slow.
 */
export const MIN_BANDWIDTH = 16_384;

/** Throws a RangeError unless `cap` (the option or flag `name`) is a bandwidth cap taken. */
export function checkBandwidth(cap: number, name: string): void {
  if (!(typeof cap === "number" && Number.isFinite(cap) && cap >= MIN_BANDWIDTH)) {
    throw new RangeError(
      `${name} must be at least ${MIN_BANDWIDTH} bytes per second (a frame must reach the ` +
        `target within its idle timeout), got ${JSON.stringify(cap)}`,
    );
  }
}
