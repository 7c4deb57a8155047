/**
 * Numbers on the command line: addresses, sizes, rates and durations.
 *
 * @module
 */
import { MIN_BANDWIDTH } from "../_bandwidth.ts";
import { UsageError } from "./_cli.ts";
import { MAX_TIMER_MS } from "../_delay.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";

/** The longest duration a flag takes, in whole seconds: the longest wait a timer can take. */
export const MAX_DURATION_SECONDS = Math.floor(MAX_TIMER_MS / 1000);

/**
 * --max-throttle, --throttle-initial and --throttle-step (whole percents)
 * as auto-converge's steps, in shares: `{ throttle }`, or nothing without
 * --max-throttle.
 */
export function parseThrottleFlags(
  values: Readonly<Record<string, string | boolean | undefined>>,
): { throttle?: ThrottleSteps } {
  const share = (flag: string) => {
    const text = values[flag];
    return typeof text === "string" ? parsePercent(text, `--${flag}`) / 100 : undefined;
  };
  const [max, initial, step] = ["max-throttle", "throttle-initial", "throttle-step"].map(share);
  if (max === undefined) {
    if (initial !== undefined || step !== undefined) {
      throw new UsageError("--throttle-initial and --throttle-step need --max-throttle");
    }
    return {};
  }
  return {
    throttle: {
      max,
      ...(initial !== undefined ? { initial } : {}),
      ...(step !== undefined ? { step } : {}),
    },
  };
}

/** A whole percent from 1 to 99 (as QEMU's `max-cpu-throttle` takes it). */
export function parsePercent(text: string, flag: string): number {
  const percent = Number(text);
  if (!/^[0-9]+$/.test(text) || percent < 1 || percent > 99) {
    throw new UsageError(`${flag} must be a whole percent from 1 to 99, got "${text}"`);
  }
  return percent;
}

/** "HOST:PORT" (or "[v6]:PORT") as hostname and port; port 0 (any free port) only if `anyPort`. */
export function parseAddress(
  text: string,
  flag: string,
  anyPort = false,
): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < (anyPort ? 0 : 1) || port > 65535) {
    // "::1:7000" reads as an IPv6 address with no port: say how to write one.
    const portAt = text.lastIndexOf(":");
    const v6 = !match && /^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*:\d+$/.test(text)
      ? ` (an IPv6 address goes in brackets: "[${text.slice(0, portAt)}]${text.slice(portAt)}")`
      : "";
    throw new UsageError(`${flag} needs HOST:PORT, got "${text}"${v6}`);
  }
  return { hostname: match[1] ?? match[2]!, port };
}

const SI: Record<string, number> = { "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };
const BINARY: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/**
 * A number with an optional unit: a bare letter scales by `scale` (the
 * flag's own convention), "KiB", "MiB"... always by powers of 2, "kB", "MB"...
 * always by powers of 10, as the units say. No spaces: other numeric flags
 * take none either.
 */
function parseScaled(
  text: string,
  flag: string,
  scale: Record<string, number>,
  what: string,
): number {
  const match = /^(\d+(?:\.\d+)?)(?:([kKMGT])(iB|B)?)?$/.exec(text);
  const [letter, unit] = [match?.[2] ?? "", match?.[3]];
  const factor = unit === "iB"
    ? BINARY[letter.toUpperCase()]
    : unit === "B"
    ? SI[letter]
    : scale[letter];
  if (!match || factor === undefined) throw new UsageError(`${flag} needs ${what}, got "${text}"`);
  const value = Math.round(Number(match[1]) * factor);
  // Past 2^53 a number no longer counts bytes exactly (and a long digit string is no size at all).
  if (!Number.isSafeInteger(value)) throw new UsageError(`${flag} is too large: "${text}"`);
  return value;
}

/** A rate in bytes per second: "125000000", "125M" or "125MB" (M = 10^6), "100MiB" (2^20). */
export function parseRate(text: string, flag: string): number {
  const rate = parseScaled(text, flag, SI, "bytes per second (e.g. 125000000 or 125M)");
  if (rate < MIN_BANDWIDTH) {
    // Below it a frame could take longer than the target's idle timeout: it would drop the sender.
    throw new UsageError(
      `${flag} must be at least ${MIN_BANDWIDTH} bytes per second, got "${text}"`,
    );
  }
  return rate;
}

/**
 * A memory size in bytes: "268435456", "256M" or "256MiB" (M = 2^20, as
 * QEMU's -m), "1G"; "256MB" is 256 x 10^6.
 */
export function parseSize(text: string, flag: string): number {
  const size = parseScaled(text, flag, BINARY, "a size (e.g. 256M or 1G)");
  if (size <= 0) throw new UsageError(`${flag} must be positive`);
  return size;
}

/** A positive integer in decimal digits, at most `max`. */
export function parseCount(text: string, flag: string, max = Number.MAX_SAFE_INTEGER): number {
  // Decimal digits only: Number() would also take "1e3", "0x10" and " 5 ".
  const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`${flag} needs a positive integer, got "${text}"`);
  }
  if (n > max) throw new UsageError(`${flag} takes at most ${max}, got ${text}`);
  return n;
}

/**
 * A duration in whole seconds (a timeout), as milliseconds: 1 to
 * {@linkcode MAX_DURATION_SECONDS} (24.8 days), the longest a timer waits.
 */
export function parseDuration(text: string, flag: string): number {
  return checkDurationSeconds(parseCount(text, flag), text, flag) * 1000;
}

/**
 * `seconds` (parsed from `text`, given as `flag`), unless it is longer
 * than a timer can wait ({@linkcode MAX_DURATION_SECONDS}).
 *
 * @throws UsageError naming the flag and the largest value
 */
export function checkDurationSeconds(seconds: number, text: string, flag: string): number {
  if (seconds > MAX_DURATION_SECONDS) {
    throw new UsageError(
      `${flag} takes at most ${MAX_DURATION_SECONDS} seconds (24.8 days), got "${text}"`,
    );
  }
  return seconds;
}
