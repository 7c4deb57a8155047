/**
 * Transfer throughput over loopback, unthrottled, sender and receiver in
 * two processes: (a) a gang of unique contents, (b) a gang of mostly zero
 * and duplicate pages; and, in the same run, raw Deno TCP over loopback,
 * the ceiling of one machine, to read both as ratios.
 *
 * Goals (issue 3): (a) at least 1 GB/s of guest RAM, (b) at least 5 GB/s
 * effective.
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-write` (/dev/shm),
 * `--allow-run` (deno, mkdir), `--allow-net`, `--allow-env`.
 *
 * @module
 */
import { Gang } from "../src/scan/gang.ts";
import { migrateGang } from "../src/transfer/migrate_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { ReceiverProcess } from "../src/target/receiver_process.ts";
import { type GuestMix, IDLE_MIX, median, UNIQUE_MIX, writeGuestFiles } from "./_guest_ram.ts";

const GUESTS = 4;
const GUEST_BYTES = 256 * 2 ** 20;
const RUNS = 3;
const RAW_BYTES = 2 * 2 ** 30;

/** Seconds to push RAW_BYTES through Deno TCP on loopback to a reader process, in 1 MiB writes. */
async function rawTcpSeconds(): Promise<number> {
  const sink = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL("./_tcp_sink.ts", import.meta.url).pathname],
    stdout: "piped",
  }).spawn();
  const lines = sink.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const port = Number((await lines.read()).value!.trim());
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunk = new Uint8Array(1 << 20).fill(1);
  const started = performance.now();
  for (let sent = 0; sent < RAW_BYTES; sent += chunk.length) {
    for (let off = 0; off < chunk.length;) off += await conn.write(chunk.subarray(off));
  }
  conn.close();
  const received = Number((await lines.read()).value!.trim());
  const seconds = (performance.now() - started) / 1000;
  lines.releaseLock();
  await sink.status;
  if (received !== RAW_BYTES) throw new Error(`TCP sink got ${received} of ${RAW_BYTES} bytes`);
  return seconds;
}

/** Seconds of one migration of the gang in `paths` to a receiver process. */
async function migrationSeconds(
  paths: string[],
  dir: string,
): Promise<{ seconds: number; bytes: number; preparation: number; round1: number }> {
  await using receiver = await ReceiverProcess.start({ dir, args: ["--insecure"] });
  using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })), { seed: randomSeed() });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: receiver.port });
  const started = performance.now();
  const report = await migrateGang(gang, conn);
  const seconds = (performance.now() - started) / 1000;
  for (let i = 0; i < paths.length; i++) await Deno.remove(`${dir}/g${i}`);
  return {
    seconds,
    bytes: report.bytesOnWire,
    preparation: report.preparationSeconds,
    round1: report.rounds[0]!.seconds,
  };
}

async function measureGang(label: string, mix: GuestMix, dir: string) {
  console.error(`Writing ${GUESTS} x ${GUEST_BYTES / 2 ** 20} MiB of ${label} guest RAM...`);
  const paths = writeGuestFiles(
    `/dev/shm/gangway-bench-${label}-${Deno.pid}`,
    GUESTS,
    GUEST_BYTES,
    mix,
  );
  try {
    const runs = [];
    for (let run = 0; run < RUNS; run++) runs.push(await migrationSeconds(paths, dir));
    const seconds = median(runs.map((r) => r.seconds));
    const phases = `preparation scan ${
      (median(runs.map((r) => r.preparation)) * 1000).toFixed(0)
    } ms, ` +
      `round 1 ${(median(runs.map((r) => r.round1)) * 1000).toFixed(0)} ms, of ${
        (seconds * 1000).toFixed(0)
      } ms`;
    return { seconds, wire: runs[0]!.bytes, gbps: (GUESTS * GUEST_BYTES) / seconds / 1e9, phases };
  } finally {
    for (const path of paths) await Deno.remove(path);
  }
}

if (import.meta.main) {
  const dir = `/dev/shm/gangway-bench-target-${Deno.pid}`;
  await new Deno.Command("mkdir", { args: ["-p", dir] }).output();
  try {
    const raw: number[] = [];
    for (let run = 0; run < RUNS; run++) raw.push(await rawTcpSeconds());
    const tcp = RAW_BYTES / median(raw) / 1e9;
    const unique = await measureGang("unique", UNIQUE_MIX, dir);
    const shared = await measureGang("idle", IDLE_MIX, dir);
    const gib = (GUESTS * GUEST_BYTES) / 2 ** 30;
    console.log(`raw Deno TCP, loopback:        ${tcp.toFixed(2)} GB/s (median of ${RUNS})`);
    console.log(
      `(a) unique gang, ${gib} GiB:      ${unique.gbps.toFixed(2)} GB/s of guest RAM ` +
        `(${(unique.wire / 2 ** 20).toFixed(0)} MiB on the wire; ${
          (unique.gbps / tcp).toFixed(2)
        }x raw TCP; goal >= 1 GB/s)`,
    );
    console.log(
      `(b) idle-like gang, ${gib} GiB:   ${shared.gbps.toFixed(2)} GB/s effective ` +
        `(${(shared.wire / 2 ** 20).toFixed(0)} MiB on the wire; ${
          (shared.gbps / tcp).toFixed(2)
        }x raw TCP; goal >= 5 GB/s)`,
    );
    console.log(`    (a) ${unique.phases}`);
    console.log(`    (b) ${shared.phases}`);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await new Deno.Command("rm", { args: ["-rf", dir] }).output();
  }
}
