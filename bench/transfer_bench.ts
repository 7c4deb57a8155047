/**
 * Transfer throughput over loopback, unthrottled, sender and receiver in
 * two processes: (a) a gang of unique contents, (b) a gang of mostly zero
 * and duplicate pages; and, in the same run, raw Deno TCP over loopback,
 * the ceiling of one machine, to read both as ratios.
 *
 * Goals (issue 3): (a) at least 1 GB/s of guest RAM, (b) at least 5 GB/s
 * effective. Peers in the same run (issue 13): `cp` of the idle-like
 * gang's files on the same tmpfs, against its one pass (goal >= 0.5x), and
 * (c) one large guest against the same bytes split into many guests, in
 * one pass (goal: >= 0.9x the split gang's speed).
 *
 * Each gang moves two ways: as a live migration (live rounds until nothing
 * changes, the first of them indexing the gang, then the final round:
 * without soft-dirty bits each of those reads every page) and in one pass, as `send` moves files nobody
 * writes (`maxRounds: 1`).
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-write` (/dev/shm),
 * `--allow-run` (deno, mkdir), `--allow-net`, `--allow-env`.
 *
 * @module
 */
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { ReceiverProcess } from "../src/target/receiver_process.ts";
import { type GuestMix, IDLE_MIX, median, UNIQUE_MIX, writeGuestFiles } from "./_guest_ram.ts";

const GUESTS = 4;
const GUEST_BYTES = 256 * 2 ** 20;
const RUNS = 3;
const RAW_BYTES = 2 * 2 ** 30;
/** (c): one guest of this size against SPLIT_GUESTS guests of the same bytes in all. */
const SPLIT_BYTES = 2 * 2 ** 30;
const SPLIT_GUESTS = 8;

/** Seconds to push RAW_BYTES through Deno TCP on loopback to a reader process, in 1 MiB writes. */
async function rawTcpSeconds(): Promise<number> {
  const sink = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL("./_tcp_sink.ts", import.meta.url).href],
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

/** One migration: its seconds, bytes on the wire, and the seconds of its first round. */
interface Run {
  seconds: number;
  bytes: number;
  round1: number;
}

/** Seconds of one migration of the gang in `paths` to a receiver process. */
async function migrationSeconds(
  paths: string[],
  dir: string,
  maxRounds: number | undefined,
): Promise<Run> {
  await using receiver = await ReceiverProcess.start({ dir, args: ["--insecure"] });
  using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })), { seed: randomSeed() });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: receiver.port });
  const started = performance.now();
  const report = await transferGang(gang, conn, { maxRounds });
  const seconds = (performance.now() - started) / 1000;
  for (let i = 0; i < paths.length; i++) await Deno.remove(`${dir}/g${i}`);
  return {
    seconds,
    bytes: report.bytesOnWire,
    round1: report.rounds[0]!.seconds,
  };
}

/** Seconds of `cp` copying the files in `paths` into `dir` (median of RUNS). */
async function cpSeconds(paths: string[], dir: string): Promise<number> {
  const runs: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const started = performance.now();
    const cp = await new Deno.Command("cp", { args: [...paths, dir] }).output();
    runs.push((performance.now() - started) / 1000);
    if (!cp.success) throw new Error(`cp failed: ${new TextDecoder().decode(cp.stderr)}`);
    for (const path of paths) await Deno.remove(`${dir}/${path.split("/").pop()}`);
  }
  return median(runs);
}

/** (c): GB/s of guest RAM in one pass of one guest, then of the same bytes in SPLIT_GUESTS guests. */
async function oneAgainstSplit(dir: string): Promise<{ one: number; split: number }> {
  const speed = async (guests: number) => {
    console.error(
      `Writing ${guests} x ${SPLIT_BYTES / guests / 2 ** 20} MiB of idle-like guest RAM...`,
    );
    const prefix = `/dev/shm/gangway-bench-split${guests}-${Deno.pid}`;
    const paths = writeGuestFiles(prefix, guests, SPLIT_BYTES / guests, IDLE_MIX);
    try {
      const runs: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        runs.push((await migrationSeconds(paths, dir, 1)).seconds);
      }
      return SPLIT_BYTES / median(runs) / 1e9;
    } finally {
      for (const path of paths) await Deno.remove(path);
    }
  };
  return { one: await speed(1), split: await speed(SPLIT_GUESTS) };
}

/** The two ways a gang moves: live (the library's default rounds) and one pass (`send`). */
const MODES = [
  { label: "live rounds", maxRounds: undefined },
  { label: "one pass", maxRounds: 1 },
] as const;

interface Measured {
  gbps: number;
  wire: number;
  phases: string;
}

/** The median of RUNS migrations of one gang, each way, and of `cp` of its files. */
async function measureGang(
  label: string,
  mix: GuestMix,
  dir: string,
): Promise<{ modes: Measured[]; cpGbps: number }> {
  console.error(`Writing ${GUESTS} x ${GUEST_BYTES / 2 ** 20} MiB of ${label} guest RAM...`);
  const paths = writeGuestFiles(
    `/dev/shm/gangway-bench-${label}-${Deno.pid}`,
    GUESTS,
    GUEST_BYTES,
    mix,
  );
  try {
    const measured = [];
    for (const mode of MODES) {
      const runs: Run[] = [];
      for (let run = 0; run < RUNS; run++) {
        runs.push(await migrationSeconds(paths, dir, mode.maxRounds));
      }
      const ms = (pick: (r: Run) => number) => (median(runs.map(pick)) * 1000).toFixed(0);
      const seconds = median(runs.map((r) => r.seconds));
      measured.push({
        gbps: (GUESTS * GUEST_BYTES) / seconds / 1e9,
        wire: runs[0]!.bytes,
        phases: `round 1 ${ms((r) => r.round1)} ms, of ${(seconds * 1000).toFixed(0)} ms`,
      });
    }
    const cpGbps = (GUESTS * GUEST_BYTES) / await cpSeconds(paths, dir) / 1e9;
    return { modes: measured, cpGbps };
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
    const gangs = [
      {
        name: "(a) unique gang",
        what: "of guest RAM",
        goal: 1,
        mix: UNIQUE_MIX,
        file: "unique",
      },
      {
        name: "(b) idle-like gang",
        what: "effective",
        goal: 5,
        mix: IDLE_MIX,
        file: "idle",
      },
    ];
    const results: { modes: Measured[]; cpGbps: number }[] = [];
    for (const gang of gangs) results.push(await measureGang(gang.file, gang.mix, dir));
    const split = await oneAgainstSplit(dir);
    const gib = (GUESTS * GUEST_BYTES) / 2 ** 30;
    console.log(`raw Deno TCP, loopback: ${tcp.toFixed(2)} GB/s (median of ${RUNS})`);
    gangs.forEach((gang, g) => {
      MODES.forEach((mode, m) => {
        const r = results[g]!.modes[m]!;
        console.log(
          `${gang.name}, ${gib} GiB, ${mode.label}: ${r.gbps.toFixed(2)} GB/s ${gang.what} ` +
            `(${(r.wire / 2 ** 20).toFixed(0)} MiB on the wire; ${
              (r.gbps / tcp).toFixed(2)
            }x raw TCP; ` +
            `goal >= ${gang.goal} GB/s)\n    ${r.phases}`,
        );
      });
      const { cpGbps, modes } = results[g]!;
      console.log(
        `    cp of the same files: ${cpGbps.toFixed(2)} GB/s; one pass / cp: ` +
          `${(modes[1]!.gbps / cpGbps).toFixed(2)}x (goal >= 0.5x)`,
      );
    });
    console.log(
      `(c) one guest of ${SPLIT_BYTES / 2 ** 30} GiB, one pass: ${split.one.toFixed(2)} GB/s; ` +
        `split in ${SPLIT_GUESTS}: ${split.split.toFixed(2)} GB/s; one / split: ` +
        `${(split.one / split.split).toFixed(2)}x (goal >= 0.9x)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await new Deno.Command("rm", { args: ["-rf", dir] }).output();
  }
}
