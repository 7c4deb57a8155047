/**
 * TLS material for tests, made by tools/certs.ts (openssl) in a temporary
 * directory: a CA, a receiver certificate for 127.0.0.1 and localhost, a
 * token, and a second CA that signed nothing the receiver shows.
 *
 * @module
 */
import { makeCerts } from "../src/transport/make_certs.ts";
import { readPemFile, readTokenFile } from "../src/transport/credentials.ts";

/** Files and their contents. */
export interface LabCerts extends AsyncDisposable {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  tokenFile: string;
  /** CA certificate of another lab. */
  otherCaFile: string;
  ca: string;
  cert: string;
  key: string;
  token: string;
  otherCa: string;
  /** `receive` flags that serve with these certificates and require the token. */
  receiverArgs: string[];
  /** `send` flags that reach a receiver on 127.0.0.1 at `port` with these. */
  senderArgs(port: number): string[];
}

/** Makes a lab's certificates; dispose to remove them. */
export async function makeLabCerts(): Promise<LabCerts> {
  const dir = await Deno.makeTempDir({ prefix: "gangway-certs-" });
  try {
    const made = await makeCerts(dir, { ips: ["127.0.0.1"], dnsNames: ["localhost"] });
    const other = await makeCerts(`${dir}/other`);
    return {
      dir,
      caFile: made.ca,
      certFile: made.cert,
      keyFile: made.key,
      tokenFile: made.token,
      otherCaFile: other.ca,
      ca: await readPemFile(made.ca, "CA certificate"),
      cert: await readPemFile(made.cert, "certificate"),
      key: await readPemFile(made.key, "private key"),
      token: await readTokenFile(made.token),
      otherCa: await readPemFile(other.ca, "CA certificate"),
      receiverArgs: ["--cert", made.cert, "--key", made.key, "--token-file", made.token],
      senderArgs: (port) => [
        ...["--target", `127.0.0.1:${port}`],
        ...["--ca", made.ca, "--token-file", made.token],
      ],
      async [Symbol.asyncDispose]() {
        await Deno.remove(dir, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}
