/**
 * How a sender and a receiver reach each other: TLS by default (the
 * receiver shows a certificate, the sender checks it against a CA and
 * proves itself with a shared token inside the encrypted channel), plain
 * TCP only when asked for. Both ends hand a Deno.Conn to the engine.
 *
 * @example
 * ```ts
 * import { connectTarget, readPemFile, readTokenFile } from "./mod.ts";
 * const conn = await connectTarget({ hostname: "10.250.0.2", port: 7000 }, {
 *   ca: await readPemFile("lab-certs/ca.pem", "CA certificate"),
 * });
 * const token = await readTokenFile("lab-certs/token");
 * ```
 *
 * @module
 */
export {
  connectTarget,
  type ConnectTargetOptions,
  formatAddress,
  type TargetAddress,
} from "./connect_target.ts";
export { listenForSenders, type ListenForSendersOptions } from "./listen_for_senders.ts";
export {
  MAX_TOKEN_CHARS,
  MIN_TOKEN_CHARS,
  type PemKind,
  readPemFile,
  readTokenFile,
} from "./credentials.ts";
export { type MadeCerts, makeCerts, type MakeCertsOptions } from "./make_certs.ts";
