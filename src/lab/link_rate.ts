/**
 * Link rates as the lab writes them ("1gbit", "100mbit", "none") and the
 * token-bucket shape that makes a veth behave like an Ethernet link of that
 * rate. Pure functions: no permissions needed.
 *
 * @module
 */

/** How the lab shapes one direction of its link with a tbf qdisc. */
export interface LinkShape {
  /** The nominal rate the user asked for, in bits per second (e.g. 1e9). */
  readonly bitsPerSecond: number;
  /**
   * The rate given to tbf, in bits per second: the share of the nominal
   * rate that Ethernet frames as Linux counts them (1514 bytes) get on a
   * real wire, where each one also costs a preamble, a checksum and a gap.
   */
  readonly qdiscBitsPerSecond: number;
  /** Token bucket depth in bytes: how far the link may run ahead of the rate. */
  readonly burstBytes: number;
  /** Queue in front of the link in bytes: beyond it, packets are dropped. */
  readonly limitBytes: number;
}

/** Bytes of a full frame as Linux counts it on a veth: 1500 (MTU) + 14 header. */
export const FRAME_BYTES = 1514;
/** Bytes a full frame takes on a real wire: + 4 checksum + 8 preamble + 12 gap. */
export const WIRE_FRAME_BYTES = 1538;

/** Time of traffic the bucket holds, so a late qdisc timer loses no rate. */
const BURST_SECONDS = 0.001;
/** Smallest bucket: one 64 KiB GSO packet passes without being cut up. */
const MIN_BURST_BYTES = 64 * 1024;
/** Time of traffic the queue holds at high rates. */
const LIMIT_SECONDS = 0.01;
/** Smallest queue: a NIC's default txqueuelen of 1000 full frames. */
const MIN_LIMIT_BYTES = 1000 * FRAME_BYTES;

const UNITS: Record<string, number> = {
  bit: 1,
  kbit: 1e3,
  mbit: 1e6,
  gbit: 1e9,
  tbit: 1e12,
};

const DISPLAY_UNITS: readonly (readonly [string, number])[] = [
  ["Tbit/s", 1e12],
  ["Gbit/s", 1e9],
  ["Mbit/s", 1e6],
  ["kbit/s", 1e3],
];

/**
 * Parses a link rate: a number followed by bit, kbit, mbit, gbit or tbit
 * (decimal multiples, as tc counts them), or "none" for an unshaped link.
 *
 * @param text The rate, e.g. "1gbit", "100mbit", "2.5gbit", "none"
 * @returns Bits per second, or null for "none"
 * @throws Error when the text is not such a rate
 *
 * @example
 * ```ts
 * parseRate("2.5gbit"); // 2500000000
 * parseRate("none"); // null
 * ```
 */
export function parseRate(text: string): number | null {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === "none") return null;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(trimmed);
  const unit = match ? UNITS[match[2]!] : undefined;
  if (!match || unit === undefined) {
    throw new Error(
      `Cannot parse link rate "${text}": expected a number with bit, kbit, mbit, gbit or tbit, or "none"`,
    );
  }
  const bitsPerSecond = Math.round(Number(match[1]) * unit);
  if (bitsPerSecond < 1000) throw new Error(`Cannot parse link rate "${text}": below 1kbit`);
  return bitsPerSecond;
}

/**
 * Formats bits per second for people: "1 Gbit/s", "100 Mbit/s", "2.5 Gbit/s".
 *
 * @param bitsPerSecond The rate
 * @returns The rate with the largest unit that keeps it at 1 or more
 */
export function formatRate(bitsPerSecond: number): string {
  for (const [unit, scale] of DISPLAY_UNITS) {
    if (bitsPerSecond >= scale) return `${Number((bitsPerSecond / scale).toPrecision(4))} ${unit}`;
  }
  return `${Math.round(bitsPerSecond)} bit/s`;
}

/**
 * The tbf parameters that make one direction of a veth behave like an
 * Ethernet link of the given rate: a bulk TCP transfer then gets about the
 * goodput it gets on real hardware (941 Mbit/s on Gigabit Ethernet).
 *
 * @param bitsPerSecond The nominal link rate
 * @returns The shape to give tbf
 */
export function linkShape(bitsPerSecond: number): LinkShape {
  const bytesPerSecond = bitsPerSecond / 8;
  return {
    bitsPerSecond,
    // Per-frame wire overhead is folded into the rate: tbf's own `overhead`
    // is charged once per GSO super-packet, not once per frame (measured:
    // it made no difference), and turning GSO off halves the reachable rate.
    qdiscBitsPerSecond: Math.round(bitsPerSecond * FRAME_BYTES / WIRE_FRAME_BYTES),
    burstBytes: Math.max(MIN_BURST_BYTES, Math.ceil(bytesPerSecond * BURST_SECONDS)),
    limitBytes: Math.max(MIN_LIMIT_BYTES, Math.ceil(bytesPerSecond * LIMIT_SECONDS)),
  };
}

/**
 * The arguments of `tc qdisc replace` that put a shape on a device.
 *
 * @param device The device to shape (its egress)
 * @param shape The shape, from {@linkcode linkShape}
 * @returns Arguments for `tc`
 */
export function tbfArgs(device: string, shape: LinkShape): string[] {
  return [
    "qdisc",
    "replace",
    "dev",
    device,
    "root",
    "tbf",
    "rate",
    `${shape.qdiscBitsPerSecond}bit`,
    "burst",
    `${shape.burstBytes}`,
    "limit",
    `${shape.limitBytes}`,
  ];
}
