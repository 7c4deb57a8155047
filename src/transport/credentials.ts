/**
 * Reading the files a secure transfer needs: PEM certificates and keys,
 * and the shared token (a secret kept in a file, never on a command line
 * where `ps` shows it to every user).
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";

/** What a PEM file holds, for messages. */
export type PemKind = "certificate" | "private key" | "CA certificate";

/** Fewest characters a token may have: 16 random hex digits are 64 bits. */
export const MIN_TOKEN_CHARS = 16;
/** Most characters a token may have. */
export const MAX_TOKEN_CHARS = 1024;

function reason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory";
  return errorMessage(error);
}

/**
 * Stats a file that is about to be read, and refuses anything but a
 * regular file: opening a FIFO waits for a writer, forever, and a device
 * may never end.
 */
async function regularFile(path: string): Promise<Deno.FileInfo> {
  const info = await Deno.stat(path);
  if (!info.isFile) {
    throw new Error(
      info.isDirectory
        ? "is a directory"
        : "not a regular file (a FIFO, socket or device would be waited on)",
    );
  }
  return info;
}

/**
 * Reads a PEM file (certificate, chain or private key) as text.
 *
 * Requires `--allow-read` (the file).
 *
 * @example
 * ```ts
 * const ca = await readPemFile("lab-certs/ca.pem", "CA certificate");
 * ```
 * @throws Error `Cannot read the certificate file "x": reason` when it is
 * missing, unreadable, not PEM, or PEM of another kind (a private key
 * given as a certificate, a certificate as a key)
 */
export async function readPemFile(path: string, kind: PemKind): Promise<string> {
  let text: string;
  try {
    await regularFile(path);
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read the ${kind} file "${path}": ${reason(error)}`);
  }
  if (!text.includes("-----BEGIN ")) {
    throw new Error(`Cannot read the ${kind} file "${path}": it is not in PEM format`);
  }
  const wrong = wrongPemKind(text, kind);
  if (wrong) throw new Error(`Cannot read the ${kind} file "${path}": ${wrong}`);
  return text;
}

/**
 * Why a PEM text is not of the kind asked for, or undefined: a key given
 * for a certificate (or the other way round) would fail later, in the TLS
 * handshake, with words that do not say which file was wrong.
 */
function wrongPemKind(text: string, kind: PemKind): string | undefined {
  const hasKey = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  const hasCert = text.includes("-----BEGIN CERTIFICATE-----");
  if (kind === "private key") {
    if (hasKey) return undefined;
    return `it holds no private key${hasCert ? " (it looks like a certificate)" : ""}`;
  }
  if (hasCert) return undefined;
  return `it holds no certificate${hasKey ? " (it looks like a private key)" : ""}`;
}

/**
 * Reads the shared token from a file: its text without surrounding white
 * space. The file must be a regular file that grants the group and others
 * nothing (mode 0600 or stricter), and the token must
 * have 16 to 1024 characters, none of them a control character.
 *
 * Requires `--allow-read` (the file).
 *
 * @example
 * ```ts
 * const token = await readTokenFile("lab-certs/token");
 * ```
 * @throws Error `Cannot use the token file "x": reason`
 */
export async function readTokenFile(path: string): Promise<string> {
  const fail = (why: string) => new Error(`Cannot use the token file "${path}": ${why}`);
  let text: string;
  let mode: number | null;
  try {
    mode = (await regularFile(path)).mode;
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw fail(reason(error));
  }
  // As ssh does with private keys: no permission at all for the group or others.
  if (mode !== null && (mode & 0o077) !== 0) {
    throw fail(
      `other users may read it (mode ${(mode & 0o777).toString(8).padStart(4, "0")}; ` +
        `chmod 600 "${path}")`,
    );
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_CHARS) {
    throw fail(
      `the token has ${token.length} characters, at least ${MIN_TOKEN_CHARS} are needed (deno task certs makes one)`,
    );
  }
  if (token.length > MAX_TOKEN_CHARS) {
    throw fail(`the token has ${token.length} characters, at most ${MAX_TOKEN_CHARS} are allowed`);
  }
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(token)) throw fail("the token holds a control character");
  return token;
}
