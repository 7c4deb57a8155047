/**
 * Test TLS material for a transfer, made with openssl: a CA (with a name of
 * its own), a receiver certificate valid for given IP addresses and DNS
 * names, and a shared token. `deno task certs` (tools/certs.ts) is its
 * command line; a target on this machine makes a throwaway set for each run.
 *
 * @module
 */
import { join } from "node:path";
import { isIP } from "node:net";
import { pathExists } from "../_path_exists.ts";

/** What {@linkcode makeCerts} wrote (paths). */
export interface MadeCerts {
  /** The CA certificate's file. */
  ca: string;
  /** The CA's private key's file. */
  caKey: string;
  /** The receiver's certificate's file. */
  cert: string;
  /** The receiver's private key's file. */
  key: string;
  /** The shared token's file. */
  token: string;
  /** Which of those were made by this call (the others existed). */
  made: string[];
}

/** Options of {@linkcode makeCerts}. */
export interface MakeCertsOptions {
  /** File name of the receiver's certificate and key. Default "receiver". */
  name?: string;
  /** IP addresses the certificate is valid for. */
  ips?: string[];
  /** DNS names it is valid for. */
  dnsNames?: string[];
  /** Days of validity. Default 90. */
  days?: number;
}

async function openssl(args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error("Cannot make certificates: openssl is missing (apt-get install -y openssl)");
    }
    throw error;
  }
  if (!output.success) {
    throw new Error(
      `Cannot make certificates: openssl ${args[0]} failed: ${
        new TextDecoder().decode(output.stderr).trim().split("\n").slice(-3).join(" ")
      }`,
    );
  }
}

/** Arguments of `openssl req` for a new P-256 key and a certificate. */
function newKeyArgs(key: string, cert: string, subject: string, days: number): string[] {
  return [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    String(days),
    "-keyout",
    key,
    "-out",
    cert,
    "-subj",
    subject,
  ];
}

/**
 * Makes (or completes) a lab's TLS material in `dir`: a CA, a receiver
 * certificate for the given addresses and a token. An existing CA and
 * token are reused; an existing receiver certificate of that name is an
 * error.
 *
 * Requires `--allow-run=openssl`, `--allow-read` and `--allow-write` (dir).
 *
 * @example
 * ```ts
 * const made = await makeCerts("lab-certs", { ips: ["10.250.0.2"] });
 * console.log(made.cert); // lab-certs/receiver.pem
 * ```
 */
export async function makeCerts(dir: string, options: MakeCertsOptions = {}): Promise<MadeCerts> {
  const name = options.name ?? "receiver";
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name === "ca" || name === "token") {
    throw new Error(`Cannot make certificates: "${name}" is not a usable certificate name`);
  }
  const ips = options.ips ?? [];
  const dnsNames = options.dnsNames ?? [];
  for (const ip of ips) {
    if (isIP(ip) === 0) throw new Error(`Cannot make certificates: "${ip}" is not an IP address`);
  }
  for (const dns of dnsNames) {
    if (!/^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(dns)) {
      throw new Error(`Cannot make certificates: "${dns}" is not a DNS name`);
    }
  }
  const sans = ips.length + dnsNames.length > 0
    ? [...ips.map((ip) => `IP:${ip}`), ...dnsNames.map((dns) => `DNS:${dns}`)]
    : ["IP:127.0.0.1", "DNS:localhost"];
  const days = options.days ?? 90;
  const paths = {
    ca: join(dir, "ca.pem"),
    caKey: join(dir, "ca.key"),
    cert: join(dir, `${name}.pem`),
    key: join(dir, `${name}.key`),
    token: join(dir, "token"),
  };
  if (await pathExists(paths.cert) || await pathExists(paths.key)) {
    throw new Error(`Cannot make certificates: "${paths.cert}" or its key exists already`);
  }
  // Checked before anything is written: a CA kept off the hosts has to be put back to sign.
  if (await pathExists(paths.ca) && !(await pathExists(paths.caKey))) {
    throw new Error(
      `Cannot make certificates: "${paths.ca}" is there but its key "${paths.caKey}" is not: ` +
        "put the CA's key back to sign with it, or use a new directory for a new CA",
    );
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const made: string[] = [];

  // Step 1 -- the CA, unless this directory has one.
  if (!(await pathExists(paths.ca))) {
    await openssl([
      // A name of its own: two labs' CAs of one name would only differ by signature.
      ...newKeyArgs(paths.caKey, paths.ca, `/CN=gangway test CA ${crypto.randomUUID()}`, days),
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    await Deno.chmod(paths.caKey, 0o600);
    made.push(paths.ca, paths.caKey);
  }

  // Step 2 -- the receiver's key and certificate, signed by the CA.
  await openssl([
    ...newKeyArgs(paths.key, paths.cert, `/CN=${name}`, days),
    "-CA",
    paths.ca,
    "-CAkey",
    paths.caKey,
    "-addext",
    `subjectAltName=${sans.join(",")}`,
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature",
    "-addext",
    "extendedKeyUsage=serverAuth",
  ]);
  await Deno.chmod(paths.key, 0o600);
  made.push(paths.cert, paths.key);

  // Step 3 -- the token, unless there is one.
  if (!(await pathExists(paths.token))) {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    await Deno.writeTextFile(paths.token, hex + "\n", { mode: 0o600, createNew: true });
    made.push(paths.token);
  }
  return { ...paths, made };
}
