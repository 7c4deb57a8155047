/**
 * `deno task fuzz -- [--iterations N] [--seed S] [--from I] [--target NAME]...`
 *
 * Runs the fuzzer of tests/fuzz_targets.ts for as long as asked: each
 * target (decoders, frame-reader, receiver, hostile-hello, scan-cli; all
 * by default) for N iterations (default 1000) from iteration I (default 0)
 * of seed S (default: random, printed). The same seed and iteration replay
 * the same input, so a failure prints the command that reproduces it.
 * Exit code 1 on the first broken invariant.
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-write` (temporary
 * directories and /dev/shm fixtures), `--allow-net=127.0.0.1` (receiver
 * sessions over loopback), `--allow-env=GANGWAY_LIB` and `--allow-run`
 * (the scan CLI runs in a child `deno`, whose path differs between
 * installs, and `mkfifo`).
 *
 * @module
 */
import { parseCli, runMain, UsageError } from "../src/cli/_cli.ts";
import {
  fuzzDecoders,
  fuzzFrameReader,
  fuzzHostileHellos,
  fuzzReceiverSessions,
  type FuzzRun,
  fuzzScanCli,
  type FuzzStats,
  type Recording,
  recordMigration,
} from "../tests/fuzz_targets.ts";

const USAGE =
  "usage: deno task fuzz -- [--iterations N] [--seed S] [--from I] [--target decoders|frame-reader|receiver|hostile-hello|scan-cli]...";

const TARGETS: Record<string, (run: FuzzRun, recording: Recording) => Promise<FuzzStats>> = {
  "decoders": fuzzDecoders,
  "frame-reader": fuzzFrameReader,
  "receiver": fuzzReceiverSessions,
  "hostile-hello": (run) => fuzzHostileHellos(run),
  "scan-cli": (run) => fuzzScanCli(run),
};

function integer(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) {
    throw new UsageError(`${flag} needs an integer, got "${text}"`);
  }
  return n;
}

async function main(args: string[]): Promise<void> {
  const { values } = parseCli(args, {
    iterations: { type: "string" },
    seed: { type: "string" },
    from: { type: "string" },
    target: { type: "string", multiple: true },
  });
  const run: FuzzRun = {
    seed: integer(values.seed, "--seed", crypto.getRandomValues(new Uint32Array(1))[0]!),
    from: integer(values.from, "--from", 0),
    iterations: integer(values.iterations, "--iterations", 1000),
  };
  const names = values.target ?? Object.keys(TARGETS);
  for (const name of names) {
    if (!TARGETS[name]) throw new UsageError(`unknown target "${name}"`);
  }
  console.log(`seed ${run.seed}, iterations ${run.from}..${run.from! + run.iterations - 1}`);
  const recording = await recordMigration();
  for (const name of names) {
    const stats = await TARGETS[name]!(run, recording);
    const outcomes = Object.entries(stats.outcomes).sort((a, b) => b[1] - a[1]);
    console.log(
      `\n${name}: ${stats.iterations} iterations in ${stats.seconds.toFixed(1)} s, ` +
        `${outcomes.length} kinds of outcome, no invariant broken`,
    );
    for (const [outcome, n] of outcomes.slice(0, 12)) {
      console.log(`  ${String(n).padStart(7)}  ${outcome}`);
    }
    if (outcomes.length > 12) console.log(`  ... and ${outcomes.length - 12} rarer ones`);
  }
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
