import { assert, assertEquals } from "./_assert.ts";
import {
  fuzzDecoders,
  fuzzFrameReader,
  fuzzHostileHellos,
  fuzzReceiverSessions,
  fuzzScanCli,
  type FuzzStats,
  type Recording,
  recordMigration,
} from "./fuzz_targets.ts";

// Fixed seed and counts: a few seconds in CI, the same inputs every run.
// `deno task fuzz -- --iterations N --seed S` runs many more.
const SEED = 20261125;

let recording: Recording | undefined;
async function corpus(): Promise<Recording> {
  return recording ??= await recordMigration();
}

/** How many iterations ended in each way, for outcomes whose name starts with `prefix`. */
function count(stats: FuzzStats, prefix: string): number {
  return Object.entries(stats.outcomes)
    .filter(([outcome]) => outcome.startsWith(prefix))
    .reduce((sum, [, n]) => sum + n, 0);
}

Deno.test("fuzz: the frame decoders return or throw a ProtocolError on random and mutated bodies", async () => {
  const stats = await fuzzDecoders({ seed: SEED, iterations: 5000 }, await corpus());
  assertEquals(stats.iterations, 5000);
  assert(count(stats, "Hello: ProtocolError") > 0 && count(stats, "Pages: ProtocolError") > 0);
  assert(count(stats, "Pages: accepted") > 0, "some mutated bodies still decode");
});

Deno.test("fuzz: FrameReader yields frames, ends, or throws a ProtocolError over any finite stream", async () => {
  const stats = await fuzzFrameReader({ seed: SEED, iterations: 2000 }, await corpus());
  assert(count(stats, "ended cleanly") > 0 && count(stats, "ProtocolError") > 0);
});

Deno.test("fuzz: a receiver fed mutated recordings fails clearly and cleanly, or completes an exact copy", async () => {
  const recorded = await corpus();
  assert(recorded.frames.some((f) => f.type === 11) && recorded.frames.some((f) => f.type === 12));
  const stats = await fuzzReceiverSessions({ seed: SEED, iterations: 600 }, recorded);
  assert(count(stats, "complete") >= 12, "the unchanged replays completed");
  assert(count(stats, "ProtocolError") > 300, JSON.stringify(stats.outcomes));
  assert(count(stats, "Error: Digest mismatch") > 0, "some mutations only the digest catches");
});

Deno.test("fuzz: hostile guest names, sizes and counts never reach the file system", async () => {
  const stats = await fuzzHostileHellos({ seed: SEED, iterations: 400 });
  assert(count(stats, "ProtocolError: Gang refused: guest name") > 0);
  assert(count(stats, 'ProtocolError: Gang refused: guest "" has') > 0);
  assert(
    count(stats, "ProtocolError: Sender closed the connection") > 0,
    "some gangs were accepted",
  );
});

Deno.test("fuzz: scan takes hostile file names, sizes and kinds with a report or one clear error", async () => {
  const stats = await fuzzScanCli({ seed: SEED, iterations: 16 });
  assert(count(stats, "scanned") > 0 && count(stats, "error: Cannot") > 0, JSON.stringify(stats));
});
