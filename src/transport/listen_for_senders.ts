/**
 * The receiver's end of the transport: a listener for senders, over TLS
 * (the default) or plain TCP when the caller insists. Either way it
 * yields Deno.Conn, so the receiver does not care which.
 *
 * @module
 */
import { formatAddress, type TargetAddress } from "./connect_target.ts";
import { errorMessage } from "../_errors.ts";

/** Options of {@linkcode listenForSenders}: a certificate and key for TLS, or `insecure`. */
export interface ListenForSendersOptions {
  /** The receiver's certificate (chain), PEM text. */
  cert?: string;
  /** Its private key, PEM text. */
  key?: string;
  /** Plain TCP: nothing is encrypted. Required when no certificate is given. */
  insecure?: boolean;
}

/**
 * Listens for senders. TLS needs both `cert` and `key`; the TLS handshake
 * of each connection happens when the receiver first reads from it (see
 * `receiveGang`, which bounds it by its handshake timeout).
 *
 * Deno's TLS server cannot ask a client for a certificate, so TLS here
 * authenticates the receiver only: require a shared token (the
 * receiver's `token` option) to accept only the intended sender.
 *
 * Requires `--allow-net` (the address).
 *
 * @example
 * ```ts
 * import { listenForSenders } from "./listen_for_senders.ts";
 * import { readPemFile, readTokenFile } from "./credentials.ts";
 * import { serveGangs } from "../transfer/receiver.ts";
 *
 * const token = await readTokenFile("lab-certs/token");
 * const cert = await readPemFile("lab-certs/receiver.pem", "certificate");
 * const key = await readPemFile("lab-certs/receiver.key", "private key");
 * const listener = listenForSenders({ hostname: "0.0.0.0", port: 7000 }, { cert, key });
 * await serveGangs(listener, { dir: "/dev/shm/target", token });
 * ```
 * @throws Error `Cannot listen on HOST:PORT: reason`
 */
export function listenForSenders(
  address: TargetAddress,
  options: ListenForSendersOptions,
): Deno.Listener {
  const fail = (why: string) => new Error(`Cannot listen on ${formatAddress(address)}: ${why}`);
  const tls = options.cert !== undefined || options.key !== undefined;
  if (tls && options.insecure) throw fail("a certificate and insecure exclude each other");
  if (!tls && !options.insecure) {
    throw fail("no certificate and key given for TLS, and plain TCP was not asked for (insecure)");
  }
  if (tls && (options.cert === undefined || options.key === undefined)) {
    throw fail("TLS needs both a certificate and its private key");
  }
  try {
    return tls
      ? Deno.listenTls({ ...address, transport: "tcp", cert: options.cert!, key: options.key! })
      : Deno.listen({ ...address, transport: "tcp" });
  } catch (error) {
    const message = errorMessage(error);
    throw fail(
      message.includes("KeyMismatch")
        ? `the private key does not belong to the certificate (${message})`
        : message,
    );
  }
}
