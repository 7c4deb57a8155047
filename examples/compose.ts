/**
 * Scan, plan and transfer, each step called by the script itself: what
 * `transferGang()` does in one call, written out so that a script can look
 * at each step's result, or put its own step in between.
 *
 *   deno run -A examples/compose.ts --target HOST:PORT (--ca FILE --token-file FILE | --insecure)
 *     [--max-rounds N] FILE...
 *
 * Moves RAM files (each one guest, named after its file) to a target that
 * runs `deno task receive`. Nothing here pauses a writer: the files must
 * not change after the final round (a script moving running guests pauses
 * them just before it, as `migrateQemuGang()` does). `--max-rounds`
 * (default 2) counts the final round: live rounds run until the plan's
 * convergence rule, or the limit, says the next is the final one. Prints
 * what each step found or did, and exits 0 once the target verified every
 * guest.
 *
 * Permissions: --allow-ffi (the page library), --allow-read (RAM files,
 * CA and token), --allow-net (the target), --allow-env=GANGWAY_LIB.
 *
 * @module
 */
import { basename } from "node:path";
import { parseArgs } from "node:util";
import {
  Gang,
  GangSender,
  prepareGang,
  randomSeed,
  type RoundReport,
  type RoundSize,
  roundSize,
  shouldStopLiveRounds,
} from "../mod.ts";
import { connectTarget, readPemFile, readTokenFile } from "../src/transport/mod.ts";
import { parseAddress, parseCount } from "../src/cli/_units.ts";

const USAGE = "usage: deno run -A examples/compose.ts --target HOST:PORT " +
  "(--ca FILE --token-file FILE | --insecure) [--max-rounds N] FILE...";
const say = (text: string) => console.log(`compose: ${text}`);

/** The arguments, or a one-line usage error (exit 2). */
function parseArguments() {
  try {
    return parseArgs({
      args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
      allowPositionals: true,
      options: {
        target: { type: "string" },
        ca: { type: "string" },
        "token-file": { type: "string" },
        insecure: { type: "boolean" },
        "max-rounds": { type: "string", default: "2" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    console.error(`compose: ${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
}
const { values, positionals: files } = parseArguments();
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
/** A flag's value, or its one-line error and the usage (exit 2). */
function flag<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    console.error(`compose: ${error instanceof Error ? error.message : error}\n${USAGE}`);
    Deno.exit(2);
  }
}
if (!values.target || files.length === 0) {
  console.error(USAGE);
  Deno.exit(2);
}
const target = flag(() => parseAddress(values.target!, "--target")); // "[::1]:7000" too
const maxRounds = flag(() => parseCount(values["max-rounds"], "--max-rounds"));
if (!values.insecure && (!values.ca || !values["token-file"])) {
  console.error(`compose: --ca and --token-file are needed for TLS, or --insecure\n${USAGE}`);
  Deno.exit(2);
}

try {
  // Step 1 -- scan: the gang, one guest per RAM file, and its content index (keyed by a seed
  // of this migration, so that no guest can prepare colliding pages).
  using gang = Gang.open(files.map((path) => ({ name: basename(path), path })), {
    seed: randomSeed(),
  });

  // Step 2 -- plan: the preparation scan indexes every page (dirty tracking starts just before);
  // the rounds are planned from what it found. A script could stop here: it knows what
  // gang migration would send. (Optional: without it round 1 indexes each page as it sends it,
  // as transferGang does, and the gang is read once less.)
  const preparation = await prepareGang(gang);
  const { totals } = preparation.scan;
  say(
    `prepared ${totals.pages} pages: ${totals.zero} zero, ${totals.unique} distinct contents, ` +
      `${totals.duplicate} duplicates (${totals.duplicateAcross} across guests)`,
  );

  // Step 3 -- transfer: introduce the gang to the target, hand the sender the preparation, then
  // live rounds while the plan's convergence rule says so, the final round and the verification.
  const conn = await connectTarget(
    target,
    values.insecure ? { insecure: true } : { ca: await readPemFile(values.ca!, "CA certificate") },
  );
  const token = values["token-file"] ? await readTokenFile(values["token-file"]) : undefined;
  await using sender = await GangSender.connect(gang, conn, { token });
  sender.usePreparation(preparation);
  const sizes: RoundSize[] = [];
  while (!shouldStopLiveRounds(sizes, { maxRounds })) {
    const round = await sender.round();
    // A sample says whether a next live round would find enough changed to be worth it.
    sizes.push({ ...roundSize(round), changedAfter: sender.estimateChanged() });
    say(describe(round));
  }
  // Here a script moving running guests pauses them: the final round makes the target exact.
  say(describe(await sender.round({ final: true })));
  const digests = await sender.verify();
  const guests = digests.length === 1 ? "1 guest" : `${digests.length} guests`;
  say(`verified ${guests} with ${sender.bytesOnWire} bytes on the wire`);
} catch (error) {
  say(`failed: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exit(1);
}

function describe(round: RoundReport): string {
  const p = round.pages;
  return `round ${round.round}${round.final ? " (final)" : ""}: ${round.bytesOnWire} bytes; ` +
    `${p.unique + p.unsentIdentical + p.dirtiedIdentical} pages in full, ` +
    `${p.sentIdentical} references, ${p.zero} zero`;
}
