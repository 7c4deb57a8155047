/**
 * The sender's end of the transport: a connection to a target, over TLS
 * (the default) with the target's certificate checked against a CA, or
 * over plain TCP when the caller insists.
 *
 * @module
 */
import { closeQuietly } from "../_close_quietly.ts";
import { checkTimeout, timerMs, withTimeout } from "../_delay.ts";
import { errorMessage } from "../_errors.ts";

/** Where a target listens. */
export interface TargetAddress {
  /** An IP address (the usual case in a lab) or a host name. */
  hostname: string;
  /** The TCP port. */
  port: number;
}

/** Options of {@linkcode connectTarget}: a CA for TLS, or `insecure`. */
export interface ConnectTargetOptions {
  /**
   * The CA certificate (PEM text) that signed the target's certificate.
   * The connection is TLS and fails unless the target shows a certificate
   * of this CA for `serverName`. Note that Deno also trusts its built-in
   * public roots next to this CA.
   */
  ca?: string;
  /**
   * The name the target's certificate must carry (an IP address or a DNS
   * name). Default: the address's hostname.
   */
  serverName?: string;
  /** Plain TCP: no encryption, the target is not checked. Required when `ca` is not given. */
  insecure?: boolean;
  /** Longest wait for the connection and the TLS handshake. Default 15 s. */
  timeoutMs?: number;
}

/** "host:port", with brackets around an IPv6 address. */
export function formatAddress(address: TargetAddress): string {
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `${host}:${address.port}`;
}

/** Says in words why a TLS handshake with a target failed. */
function explainTlsError(message: string, name: string): string {
  // BadSignature: a CA of the same name (another lab's) signed it.
  if (message.includes("UnknownIssuer") || message.includes("BadSignature")) {
    return `its certificate is not signed by the given CA (${message})`;
  }
  if (message.includes("not valid for name")) {
    return `its certificate is not valid for "${name}" (${message}); ` +
      "a certificate for an IP address needs that address as a subject alternative name " +
      "(deno task certs -- DIR --ip ADDRESS)";
  }
  if (message.includes("Expired")) return `its certificate has expired (${message})`;
  if (/corrupt message|InvalidContentType/.test(message)) {
    return `it does not speak TLS (is it running with --insecure?) (${message})`;
  }
  return message;
}

/**
 * Connects to a target that runs `receive`. With `ca`, the TLS handshake
 * is completed here, so that a wrong certificate is reported as such
 * before any byte of the gang is sent.
 *
 * Requires `--allow-net` (the target).
 *
 * @example
 * ```ts
 * import { connectTarget } from "./connect_target.ts";
 * import { readPemFile, readTokenFile } from "./credentials.ts";
 * import { transferGang } from "../transfer/transfer_gang.ts";
 * import type { Gang } from "../scan/gang.ts";
 *
 * declare const gang: Gang;
 * const token = await readTokenFile("lab-certs/token");
 * const ca = await readPemFile("lab-certs/ca.pem", "CA certificate");
 * const conn = await connectTarget({ hostname: "10.250.0.2", port: 7000 }, { ca });
 * await transferGang(gang, conn, { token });
 * ```
 * @throws Error `Cannot connect to the target HOST:PORT: reason`
 */
export async function connectTarget(
  address: TargetAddress,
  options: ConnectTargetOptions,
): Promise<Deno.Conn> {
  const where = formatAddress(address);
  const fail = (why: string) => new Error(`Cannot connect to the target ${where}: ${why}`);
  if (options.ca === undefined && !options.insecure) {
    throw fail("no CA certificate given for TLS, and plain TCP was not asked for (insecure)");
  }
  if (options.ca !== undefined && options.insecure) {
    throw fail("a CA certificate and insecure exclude each other");
  }
  checkTimeout(options.timeoutMs, "timeoutMs");
  const timeoutMs = options.timeoutMs ?? 15_000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timerMs(timeoutMs));
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({
      hostname: address.hostname,
      port: address.port,
      signal: abort.signal,
    });
  } catch (error) {
    throw fail(
      abort.signal.aborted
        ? `no connection within ${timeoutMs / 1000} s`
        : error instanceof Error
        ? error.message
        : String(error),
    );
  } finally {
    clearTimeout(timer);
  }
  // Frames go out as written: with Nagle's algorithm the first request after the TLS handshake
  // waited for an ACK the target delays (a HELLO's answer took 88 ms on loopback, 45 without it).
  tcp.setNoDelay(true);
  if (options.insecure) return tcp;

  const name = options.serverName ?? address.hostname;
  try {
    const tls = await Deno.startTls(tcp, { hostname: name, caCerts: [options.ca!] });
    await withTimeout(
      tls.handshake(),
      timeoutMs,
      () => new Error(`no TLS handshake within ${timeoutMs / 1000} s`),
    ).catch((error) => {
      tls.close();
      throw error;
    });
    return tls;
  } catch (error) {
    closeQuietly(tcp); // closed with the TLS connection
    throw fail(explainTlsError(errorMessage(error), name));
  }
}
