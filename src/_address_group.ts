/**
 * Which peer addresses count as one for a per-address bound: the
 * addresses one host or one network can use at once. A host holds every
 * address of 127.0.0.0/8 and ::1 on its loopback, and an IPv6 host
 * usually a whole /64 (SLAAC, privacy addresses): counted one by one,
 * each would get its own share of the bound.
 *
 * @module
 */
import { isIPv4, isIPv6 } from "node:net";

/** The group of every loopback address, IPv4 and IPv6: they all are this host. */
const LOOPBACK = "loopback";

/**
 * The group a peer address is counted in: "loopback" for 127.0.0.0/8 and
 * ::1, an IPv4 address as itself (an IPv4-mapped IPv6 address as its IPv4
 * address), any other IPv6 address as its /64 (`2001:db8:0:1::/64`, with
 * its zone when it has one); anything else (a unix socket) as it is.
 *
 * @example
 * ```ts
 * import { addressGroup } from "./_address_group.ts";
 *
 * addressGroup("127.0.0.2"); // "loopback"
 * addressGroup("::ffff:192.0.2.7"); // "192.0.2.7"
 * addressGroup("2001:db8::5"); // "2001:db8:0:0::/64"
 * ```
 */
export function addressGroup(address: string): string {
  const zoneAt = address.indexOf("%");
  const ip = zoneAt < 0 ? address : address.slice(0, zoneAt);
  const zone = zoneAt < 0 ? "" : address.slice(zoneAt);
  if (isIPv4(ip)) return ipv4Group(ip);
  if (!isIPv6(ip)) return address;
  const groups = ipv6Groups(ip);
  const zeros = (from: number, to: number) => groups.slice(from, to).every((g) => g === 0);
  if (zeros(0, 5) && groups[5] === 0xffff) {
    // IPv4-mapped: an IPv4 peer of a listener on "::".
    const [high, low] = [groups[6]!, groups[7]!];
    return ipv4Group(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
  }
  if (zeros(0, 7) && groups[7] === 1) return LOOPBACK;
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64${zone}`;
}

function ipv4Group(ip: string): string {
  return ip.startsWith("127.") ? LOOPBACK : ip;
}

/** The eight 16-bit groups of a valid IPv6 address (without zone). */
function ipv6Groups(ip: string): number[] {
  let text = ip;
  // A dotted IPv4 tail (::ffff:1.2.3.4) is the last two groups.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    const [a, b, c, d] = tail.split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${
      ((c << 8) | d).toString(16)
    }`;
  }
  const parse = (part: string | undefined) =>
    part ? part.split(":").map((group) => parseInt(group, 16)) : [];
  const [head, rest] = text.split("::");
  const front = parse(head);
  const back = parse(rest);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}
