/**
 * `deno task certs -- DIR [--name NAME] [--ip ADDRESS]... [--dns NAME]...
 * [--days N]`
 *
 * Makes what a TLS transfer needs in a lab, with openssl:
 * - `DIR/ca.pem`, `DIR/ca.key`: a test CA (made once, reused by later runs;
 *   keep `ca.key` away from the hosts);
 * - `DIR/NAME.pem`, `DIR/NAME.key` (NAME defaults to `receiver`): a receiver
 *   certificate signed by that CA, valid for the given addresses (IP
 *   subject alternative names: the lab connects to 10.250.0.2, not to a
 *   name) and names; without `--ip` or `--dns`, for 127.0.0.1 and localhost;
 * - `DIR/token`: 32 random bytes in hex, the shared token (made once).
 *
 * Keys and the token are written with mode 0600. The receiver needs
 * NAME.pem, NAME.key and token; the sender ca.pem and token.
 *
 * The same by hand:
 * ```sh
 * openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
 *   -keyout ca.key -out ca.pem -subj "/CN=gangway test CA" \
 *   -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
 * openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
 *   -CA ca.pem -CAkey ca.key -keyout receiver.key -out receiver.pem -subj "/CN=receiver" \
 *   -addext subjectAltName=IP:10.250.0.2 -addext basicConstraints=critical,CA:FALSE \
 *   -addext keyUsage=critical,digitalSignature -addext extendedKeyUsage=serverAuth
 * (umask 077; openssl rand -hex 32 > token)
 * ```
 *
 * Requires `--allow-run=openssl`, `--allow-read` and `--allow-write`
 * (DIR), and `--allow-env=INIT_CWD` for a relative DIR from where `deno
 * task` ran; a DIR under /dev (/dev/shm) needs `--allow-all`. openssl itself
 * runs outside Deno's permission checks.
 *
 * @module
 */
import { parseCli, runMain, UsageError } from "../src/cli/_cli.ts";
import { type MadeCerts, makeCerts } from "../src/transport/make_certs.ts";
import { errorMessage } from "../src/_errors.ts";

const USAGE =
  "usage: deno task certs -- DIR [--name NAME] [--ip ADDRESS]... [--dns NAME]... [--days N]";

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseCli(args, {
    name: { type: "string" },
    ip: { type: "string", multiple: true },
    dns: { type: "string", multiple: true },
    days: { type: "string" },
  }, { positionals: true });
  if (positionals.length !== 1) throw new UsageError("one directory is needed");
  const days = values.days === undefined ? undefined : Number(values.days);
  if (days !== undefined && !(Number.isInteger(days) && days > 0)) {
    throw new UsageError(`--days needs a positive integer, got "${values.days}"`);
  }
  const dir = positionals[0]!;
  const isFile = await Deno.stat(dir).then((info) => !info.isDirectory, () => false);
  if (isFile) throw new UsageError(`"${dir}" is not a directory`);
  let made: MadeCerts;
  try {
    made = await makeCerts(dir, { name: values.name, ips: values.ip, dnsNames: values.dns, days });
  } catch (error) {
    // Deno asks for --allow-all to stat or write anything under /dev (denoland/deno#30979), /dev/shm
    // included: its own advice cannot be followed through a task, and no tmpfs is needed here.
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    throw new Error(
      `Cannot make certificates in "${dir}": ${errorMessage(error)}; ` +
        `make them in a directory outside /dev and copy them, or run deno run -A tools/certs.ts`,
    );
  }
  console.log(`made: ${made.made.join(", ")}`);
  if (made.made.includes(made.cert)) {
    // Said, since a sender that connects by another address is refused only when it connects.
    const names = [...(values.ip ?? []), ...(values.dns ?? [])];
    console.log(
      `${made.cert} is valid for ${
        names.length > 0 ? names.join(", ") : "127.0.0.1 and localhost only (give --ip or --dns)"
      }`,
    );
  }
  // Lines to paste: each path quoted for a shell.
  const q = shellQuote;
  console.log(
    `receiver: --cert ${q(made.cert)} --key ${q(made.key)} --token-file ${q(made.token)}\n` +
      `sender:   --ca ${q(made.ca)} --token-file ${q(made.token)}\n` +
      `keep ${made.caKey} off the hosts; copy the token to them with mode 0600`,
  );
}

/** A word as a POSIX shell reads it back: left bare when it is plain, else in single quotes. */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
