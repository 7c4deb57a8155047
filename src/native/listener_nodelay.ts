/**
 * TCP_NODELAY on a listener Deno made (ffi/socket.c): Deno's TLS listener
 * gives a program neither its socket nor the option, and without it a
 * target's first answer after a TLS handshake waited 40-90 ms for an
 * acknowledgement the source delays. Sockets accepted from the listener
 * take the option.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/**
 * Sets TCP_NODELAY on this process's listening TCP sockets on `port`.
 * Requires `--allow-ffi`.
 *
 * @returns how many sockets were set (0: none listens there)
 */
export function setListenerNoDelay(port: number): number {
  return check(native().gw_listener_nodelay(port), `Cannot set TCP_NODELAY on port ${port}`);
}
