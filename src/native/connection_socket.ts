/**
 * A TCP connection's socket (ffi/socket.c), TLS ones included: the
 * delivery rate the kernel measures of it (what the path to the peer
 * carried in its latest bursts, whether or not the sender kept it busy),
 * the bytes still on their way to the peer, and its send buffer. Deno gives a program no descriptor for a
 * connection, so it is found by the ports of its two ends.
 *
 * @module
 */
import { native } from "./library.ts";

/** What the kernel measured of a connection. */
export interface SocketSample {
  /** Bytes per second of the latest delivery-rate sample (0: none yet). */
  bytesPerSecond: number;
  /** Whether the sender left the link idle during that sample: the rate is then a lower bound. */
  appLimited: boolean;
  /**
   * Bytes written to the connection that the peer has not acknowledged yet,
   * sent or not: what a slow link still has to carry after the sender's
   * last write returned (up to twice {@linkcode SEND_BUFFER_BYTES}).
   */
  unacknowledgedBytes: number;
}

/**
 * Send buffer a sender's connection asks for: the kernel doubles it, 64 MiB
 * in all, sixteen times the most its own sizing gave on a Gigabit link
 * (about 4 MB). A round's pages do not come evenly: where a guest's pages
 * go as differences from similar pages, the cores are the bottleneck and
 * the link runs below its rate; where they are incompressible, the link
 * is, and the cores idle. The deeper buffer lets the sender work ahead
 * during the latter. 8 MiB in all took round 1 of the lab's 4 guests from
 * 1.01-1.07 s to 0.88-0.94 (docs/lab-results/runs/ab-32); at the paper's
 * 24 guests, whose vCPUs leave gangway a fraction of the two cores, the
 * stretches last longer, and 64 MiB took round 1 from 6.7-8.9 s to
 * 5.4, with 4 and 8 guests unchanged (docs/lab-results/runs/ab-38). The
 * kernel's memory for it is used only while the link is behind.
 */
export const SEND_BUFFER_BYTES = 32 << 20;

/** One connection's socket: the kernel's measures of it, read as often as wanted, and its send buffer. */
export class ConnectionSocket {
  readonly #fd: number;
  readonly #localPort: number;
  readonly #peerPort: number;
  readonly #out = new BigUint64Array(3);

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
  static find(localPort: number, peerPort: number): ConnectionSocket | undefined {
    try {
      const fd = native().gw_socket_find(localPort, peerPort);
      return fd >= 0 ? new ConnectionSocket(fd, localPort, peerPort) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The kernel's latest measures, or undefined once the connection is gone. */
  read(): SocketSample | undefined {
    const out = this.#out;
    if (native().gw_socket_measure(this.#fd, this.#localPort, this.#peerPort, out) < 0) {
      return undefined;
    }
    return {
      bytesPerSecond: Number(out[0]),
      appLimited: out[1] !== 0n,
      unacknowledgedBytes: Number(out[2]),
    };
  }

  /**
   * Gives the connection a send buffer of at least `bytes` (doubled by the
   * kernel, and fixed from then on: no longer sized by the kernel), unless
   * it holds that much already or the kernel's sizing may grow it that far
   * (`net.ipv4.tcp_wmem`'s limit: a host tuned for long links keeps its
   * tuning). Beyond `net.core.wmem_max` only with CAP_NET_ADMIN (root);
   * without it the kernel's own sizing is kept.
   *
   * @returns the buffer's size afterwards, or undefined once the connection is gone
   */
  deepenSendBuffer(bytes: number = SEND_BUFFER_BYTES): number | undefined {
    const size = native().gw_socket_send_buffer(this.#fd, this.#localPort, this.#peerPort, bytes);
    return size < 0 ? undefined : size;
  }
}
