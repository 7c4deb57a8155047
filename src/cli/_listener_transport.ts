/**
 * The transport flags every server command shares (`receive`, `agent`).
 *
 * @module
 */
import type { ListenForSendersOptions } from "../transport/listen_for_senders.ts";
import { readPemFile, readTokenFile } from "../transport/credentials.ts";
import { UsageError } from "./_cli.ts";

/** The flags every server command has: where it listens, its directory, its transport. */
export const SERVER_FLAGS = {
  listen: { type: "string" },
  dir: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "token-file": { type: "string" },
  insecure: { type: "boolean" },
} as const;

/** Which of {@linkcode SERVER_FLAGS} are paths (see parseCli). */
export const SERVER_PATHS = ["dir", "cert", "key", "token-file"] as const;

/**
 * A server's transport and token from its flags: `--cert F --key F
 * --token-file F` (TLS), or `--insecure [--token-file F]` (plain TCP, with
 * a warning on stderr).
 *
 * Requires `--allow-read` (the files).
 *
 * @param values The parsed flags
 * @param listen The address, for the warning
 * @param command The command's name, for the errors
 * @throws UsageError when the flags do not make a transport
 */
export async function listenerTransport(
  values: {
    cert?: string;
    key?: string;
    "token-file"?: string;
    insecure?: boolean;
  },
  listen: string,
  command: string,
): Promise<{ listen: ListenForSendersOptions; token?: string }> {
  const tls = values.cert !== undefined || values.key !== undefined;
  if (values.insecure) {
    if (tls) throw new UsageError("--insecure cannot be combined with --cert or --key");
    console.error(
      `warning: --insecure: guest RAM arrives unencrypted, and anyone who can reach ${listen} ` +
        (values["token-file"] ? "and knows the token " : "") +
        "can send a gang; use it only on a network you trust",
    );
    const token = values["token-file"] ? await readTokenFile(values["token-file"]) : undefined;
    return { listen: { insecure: true }, token };
  }
  if (!tls) {
    throw new UsageError(
      `${command} needs --cert FILE --key FILE --token-file FILE (TLS, see deno task certs), ` +
        "or --insecure for plain TCP on a network you trust",
    );
  }
  if (values.cert === undefined || values.key === undefined) {
    throw new UsageError("TLS needs both --cert FILE and --key FILE");
  }
  if (values["token-file"] === undefined) {
    throw new UsageError(
      "--token-file FILE is required with TLS: the certificate proves this host, " +
        "the token the source",
    );
  }
  return {
    listen: {
      cert: await readPemFile(values.cert, "certificate"),
      key: await readPemFile(values.key, "private key"),
    },
    token: await readTokenFile(values["token-file"]),
  };
}
