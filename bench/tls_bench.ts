/**
 * What TLS costs: the same gang migrated unthrottled over loopback to a
 * receiver process, over plain TCP (`--insecure`) and over TLS with a
 * token, alternating, in the same run. Prints how long each takes from
 * connecting to the HELLO's answer, and the throughput of each and their
 * ratio, for a gang of unique contents (every byte crosses the wire
 * and is encrypted) and for an idle-like gang (mostly holes, zeros and
 * duplicates, so far fewer bytes cross).
 *
 * `deno task bench:tls [-- --guest-mib N --runs N]` (defaults: 256 MiB guests, 3 runs)
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-write` (/dev/shm and a
 * temporary directory), `--allow-run` (the receiver's deno, mkdir,
 * openssl: unscoped, as the path of deno differs between installs),
 * `--allow-net=127.0.0.1` and `--allow-env=GANGWAY_LIB`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { ReceiverProcess } from "../src/target/receiver_process.ts";
import { connectTarget } from "../src/transport/connect_target.ts";
import { readPemFile, readTokenFile } from "../src/transport/credentials.ts";
import { makeCerts } from "../src/transport/make_certs.ts";
import { type GuestMix, IDLE_MIX, median, UNIQUE_MIX, writeGuestFiles } from "./_guest_ram.ts";

const GUESTS = 2;

interface Transport {
  label: string;
  receiverArgs: string[];
  connect(port: number): Promise<Deno.Conn>;
  token?: string;
}

/** Seconds of one migration of the gang in `paths` to a fresh receiver process. */
async function migrationSeconds(paths: string[], dir: string, transport: Transport) {
  await using receiver = await ReceiverProcess.start({ dir, args: transport.receiverArgs });
  using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })), { seed: randomSeed() });
  const conn = await transport.connect(receiver.port);
  const started = performance.now();
  const report = await transferGang(gang, conn, { token: transport.token });
  const seconds = (performance.now() - started) / 1000;
  for (let i = 0; i < paths.length; i++) await Deno.remove(`${dir}/g${i}`);
  if (!report.verified) throw new Error("Cannot measure: the migration was not verified");
  return seconds;
}

/**
 * Milliseconds from connecting to the HELLO's answer (median of 8
 * connections to one receiver, the first left out: it loads TLS).
 */
async function handshakeMs(transport: Transport, dir: string): Promise<number> {
  const path = await Deno.makeTempFile({ prefix: "gangway-tlsbench-hello-" });
  await Deno.writeFile(path, new Uint8Array(PAGE_SIZE));
  try {
    await using receiver = await ReceiverProcess.start({ dir, args: transport.receiverArgs });
    const times: number[] = [];
    for (let i = 0; i < 9; i++) {
      using gang = Gang.open([{ name: `hello${i}`, path }], { seed: randomSeed() });
      const started = performance.now();
      const conn = await transport.connect(receiver.port);
      await using sender = await GangSender.connect(gang, conn, { token: transport.token });
      if (i > 0) times.push(performance.now() - started);
      await sender.abandon("only the handshake is measured");
    }
    return median(times);
  } finally {
    await Deno.remove(path);
  }
}

async function measure(
  label: string,
  mix: GuestMix,
  guestBytes: number,
  runs: number,
  dir: string,
  transports: Transport[],
) {
  console.error(`Writing ${GUESTS} x ${guestBytes / 2 ** 20} MiB of ${label} guest RAM...`);
  const paths = writeGuestFiles(
    `/dev/shm/gangway-tlsbench-${label}-${Deno.pid}`,
    GUESTS,
    guestBytes,
    mix,
  );
  try {
    const seconds = new Map<string, number[]>(transports.map((t) => [t.label, []]));
    for (let run = 0; run < runs; run++) {
      // Alternate, so that a noisy neighbour hurts both alike.
      for (const t of run % 2 === 0 ? transports : [...transports].reverse()) {
        seconds.get(t.label)!.push(await migrationSeconds(paths, dir, t));
      }
    }
    const gbps = (t: Transport) => (GUESTS * guestBytes) / median(seconds.get(t.label)!) / 1e9;
    const [plain, tls] = transports.map(gbps) as [number, number];
    console.log(
      `${label.padEnd(7)} gang, ${GUESTS} x ${guestBytes / 2 ** 20} MiB: ` +
        `plain TCP ${plain.toFixed(2)} GB/s, TLS ${tls.toFixed(2)} GB/s of guest RAM ` +
        `(medians of ${runs}); TLS/plain = ${(tls / plain).toFixed(2)}`,
    );
  } finally {
    for (const path of paths) await Deno.remove(path);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
    options: { "guest-mib": { type: "string" }, runs: { type: "string" } },
  });
  const guestBytes = Number(values["guest-mib"] ?? 256) * 2 ** 20;
  const runs = Number(values.runs ?? 3);
  const certDir = await Deno.makeTempDir({ prefix: "gangway-tlsbench-certs-" });
  const dir = `/dev/shm/gangway-tlsbench-target-${Deno.pid}`;
  await new Deno.Command("mkdir", { args: ["-p", dir] }).output();
  try {
    const made = await makeCerts(certDir);
    const ca = await readPemFile(made.ca, "CA certificate");
    const token = await readTokenFile(made.token);
    const transports: Transport[] = [
      {
        label: "plain",
        receiverArgs: ["--insecure"],
        connect: (port) => connectTarget({ hostname: "127.0.0.1", port }, { insecure: true }),
      },
      {
        label: "tls",
        receiverArgs: ["--cert", made.cert, "--key", made.key, "--token-file", made.token],
        connect: (port) => connectTarget({ hostname: "127.0.0.1", port }, { ca }),
        token,
      },
    ];
    const [plainMs, tlsMs] = [
      await handshakeMs(transports[0]!, dir),
      await handshakeMs(transports[1]!, dir),
    ];
    console.log(
      `handshake, connect to HELLO answered: plain TCP ${plainMs.toFixed(1)} ms, TLS ${
        tlsMs.toFixed(1)
      } ms (medians of 8)`,
    );
    await measure("unique", UNIQUE_MIX, guestBytes, runs, dir, transports);
    await measure("idle", IDLE_MIX, guestBytes, runs, dir, transports);
  } finally {
    await Deno.remove(certDir, { recursive: true });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
