/**
 * Reading the files a secure transfer needs: PEM certificates and keys,
 * and the shared token (a secret kept in a file, never on a command line
 * where `ps` shows it to every user).
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";
import { printable } from "../_printable.ts";
import { NativeError } from "../native/errno.ts";

/** What a PEM file holds, for messages. */
export type PemKind = "certificate" | "private key" | "CA certificate";

/** Fewest characters a token may have: 16 random hex digits are 64 bits. */
export const MIN_TOKEN_CHARS = 16;
/** Most characters a token may have. */
export const MAX_TOKEN_CHARS = 1024;

/** The largest token, certificate or key file read: a certificate chain is a few KiB. */
const MAX_FILE_BYTES = 2 ** 20;

const NOT_REGULAR = "not a regular file (a FIFO, socket or device would be waited on)";

function reason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory";
  // From the C library (readSmallFile), which says nothing of FIFOs on its own.
  if (error instanceof NativeError) {
    if (error.code === "EINVAL" || error.code === "ENXIO") return NOT_REGULAR; // ENXIO: a socket
    if (error.code === "ENOENT") return "no such file";
    if (error.code === "EACCES") return "permission denied";
    if (error.code === "EISDIR") return "is a directory";
  }
  // Any other error's message may repeat the path: on one line, as the path is.
  return printable(errorMessage(error));
}

/**
 * Stats a file that is about to be read, and refuses anything but a
 * regular file: opening a FIFO waits for a writer, forever, and a device
 * may never end.
 */
async function regularFile(path: string): Promise<Deno.FileInfo> {
  const info = await Deno.stat(path);
  if (!info.isFile) throw new Error(info.isDirectory ? "is a directory" : NOT_REGULAR);
  return info;
}

/**
 * A regular file's text and permission bits.
 *
 * Deno asks for `--allow-all` to read anything under /dev (denoland/deno#30979), /dev/shm
 * included, where a user may keep a token or certificate beside the RAM files, and `send` and
 * `receive` run without it. A program granted `--allow-ffi` may read any file anyway: there the
 * C library reads it, its module imported only then (`./transport` loads none of the C library).
 */
async function readRegularFile(path: string): Promise<{ text: string; mode: number | null }> {
  try {
    const { mode, size } = await regularFile(path);
    // A RAM file named by mistake is not read whole, whichever way the file is read.
    if (size > MAX_FILE_BYTES) {
      throw new RangeError(`${size} bytes, more than a file of this kind holds`);
    }
    return { text: await Deno.readTextFile(path), mode };
  } catch (error) {
    if (
      !(error instanceof Deno.errors.NotCapable) ||
      Deno.permissions.querySync({ name: "ffi" }).state !== "granted"
    ) {
      throw error;
    }
    const { readSmallFile } = await import("../native/small_file.ts");
    const file = readSmallFile(path, MAX_FILE_BYTES);
    return { text: new TextDecoder().decode(file.bytes), mode: file.mode };
  }
}

/**
 * Reads a PEM file (certificate, chain or private key) as text.
 *
 * Requires `--allow-read` (the file); under /dev, /dev/shm included,
 * `--allow-all` or `--allow-ffi`.
 *
 * @example
 * ```ts
 * const ca = await readPemFile("lab-certs/ca.pem", "CA certificate");
 * ```
 * @throws Error `Cannot read the certificate file "x": reason` when it is
 * missing, unreadable, not PEM, or PEM of another kind (a private key
 * given as a certificate, a certificate as a key), or for a private key,
 * when the group or others have any permission on it (mode 0600 or
 * stricter, as for the token)
 */
export async function readPemFile(path: string, kind: PemKind): Promise<string> {
  let text: string;
  let mode: number | null;
  const fail = (why: string) =>
    new Error(`Cannot read the ${kind} file "${printable(path)}": ${why}`);
  try {
    ({ text, mode } = await readRegularFile(path));
  } catch (error) {
    throw fail(reason(error));
  }
  if (!text.includes("-----BEGIN ")) throw fail("it is not in PEM format");
  const wrong = wrongPemKind(text, kind);
  if (wrong) throw fail(wrong);
  if (kind === "private key") refuseShared(mode, path, fail);
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
 * Refuses a secret (a token, a private key) whose file grants the group or
 * others any permission, as ssh does with private keys.
 */
function refuseShared(mode: number | null, path: string, fail: (why: string) => Error): void {
  if (mode !== null && (mode & 0o077) !== 0) {
    throw fail(
      `other users may read it (mode ${(mode & 0o777).toString(8).padStart(4, "0")}; ` +
        `chmod 600 "${printable(path)}")`,
    );
  }
}

/**
 * Reads the shared token from a file: its text without surrounding white
 * space. The file must be a regular file that grants the group and others
 * nothing (mode 0600 or stricter), and the token must
 * have 16 to 1024 characters, none of them a control character.
 *
 * Requires `--allow-read` (the file); under /dev, /dev/shm included,
 * `--allow-all` or `--allow-ffi`.
 *
 * @example
 * ```ts
 * const token = await readTokenFile("lab-certs/token");
 * ```
 * @throws Error `Cannot use the token file "x": reason`
 */
export async function readTokenFile(path: string): Promise<string> {
  const fail = (why: string) => new Error(`Cannot use the token file "${printable(path)}": ${why}`);
  let text: string;
  let mode: number | null;
  try {
    ({ text, mode } = await readRegularFile(path));
  } catch (error) {
    throw fail(reason(error));
  }
  refuseShared(mode, path, fail);
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
