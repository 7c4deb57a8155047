/**
 * The delivery rate the kernel measures of a TCP connection (ffi/socket.c):
 * what the path to the peer carried in its latest bursts, whether or not
 * the sender kept it busy. Deno gives a program no descriptor for a
 * connection, so it is found by the ports of its two ends.
 *
 * @module
 */
import { native } from "./library.ts";

/** What the kernel measured of a connection. */
export interface SocketRateSample {
  /** Bytes per second of the latest delivery-rate sample (0: none yet). */
  bytesPerSecond: number;
  /** Whether the sender left the link idle during that sample: the rate is then a lower bound. */
  appLimited: boolean;
}

/** One connection's kernel measures, read as often as wanted. */
export class SocketRate {
  readonly #fd: number;
  readonly #localPort: number;
  readonly #peerPort: number;
  readonly #out = new BigUint64Array(2);

  private constructor(fd: number, localPort: number, peerPort: number) {
    this.#fd = fd;
    this.#localPort = localPort;
    this.#peerPort = peerPort;
  }

  /**
   * The connection of this process whose ends have these ports, or
   * undefined if there is none, several, or no `--allow-ffi` (the rate is
   * a hint: nothing depends on having it).
   */
  static find(localPort: number, peerPort: number): SocketRate | undefined {
    try {
      const fd = native().gw_socket_find(localPort, peerPort);
      return fd >= 0 ? new SocketRate(fd, localPort, peerPort) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The kernel's latest measures, or undefined once the connection is gone. */
  read(): SocketRateSample | undefined {
    const out = this.#out;
    if (native().gw_socket_rate(this.#fd, this.#localPort, this.#peerPort, out) < 0) {
      return undefined;
    }
    return {
      bytesPerSecond: Number(out[0]),
      appLimited: out[1] !== 0n,
    };
  }
}
