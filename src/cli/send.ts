/**
 * `deno task send -- --target HOST:PORT [--max-bandwidth BYTES_PER_S]
 * [--max-rounds N] [--token T] [--json] FILE...`
 *
 * Migrates RAM files that nobody is writing (each file one guest, named
 * after the file) to a target running `receive`, and reports each round.
 *
 * Requires `--allow-ffi`, `--allow-read`, `--allow-net` and
 * `--allow-env=GANGWAY_LIB`.
 *
 * @module
 */
import { basename } from "node:path";
import { Gang } from "../scan/gang.ts";
import { randomSeed } from "../transfer/seed.ts";
import { migrateGang, type MigrationReport } from "../transfer/migrate_gang.ts";
import { parseCli, runMain, UsageError } from "./_cli.ts";
import { progressLine } from "./_progress.ts";
import { parseAddress, parseCount, parseRate } from "./_units.ts";

const USAGE =
  "usage: deno task send -- --target HOST:PORT [--max-bandwidth BYTES_PER_S] [--max-rounds N] [--token T] [--json] FILE...";

/** The JSON document of `send --json`. */
export function sendJson(report: MigrationReport) {
  return {
    guests: report.guests,
    rounds: report.rounds.map(({ round, seconds, bytesOnWire, pages, rematched, final }) => ({
      round,
      seconds,
      bytesOnWire,
      pages,
      rematched,
      final,
    })),
    bytesOnWire: report.bytesOnWire,
    guestBytes: report.guestBytes,
    seconds: report.seconds,
    verified: report.verified,
  };
}

function summary(report: MigrationReport): string {
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  const lines = report.rounds.map((r) => {
    const p = r.pages;
    return `round ${r.round}${r.final ? " (final)" : ""}: ${mib(r.bytesOnWire)} in ${
      r.seconds.toFixed(2)
    } s; ` +
      `zero ${p.zero}, unique ${p.unique}, dirtied identical ${p.dirtiedIdentical}, ` +
      `unsent identical ${p.unsentIdentical}, sent identical ${p.sentIdentical} (${r.rematched} re-matched)`;
  });
  lines.push(
    `Moved ${mib(report.guestBytes)} of guest RAM with ${mib(report.bytesOnWire)} on the wire ` +
      `(${((report.bytesOnWire / report.guestBytes) * 100).toFixed(1)}%) in ${
        report.seconds.toFixed(2)
      } s; ` +
      `verified: ${report.verified}.`,
  );
  return lines.join("\n");
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseCli(args, {
    target: { type: "string" },
    "max-bandwidth": { type: "string" },
    "max-rounds": { type: "string" },
    token: { type: "string" },
    json: { type: "boolean" },
  });
  if (!values.target) throw new UsageError("--target is required");
  if (positionals.length === 0) throw new UsageError("no RAM files given");
  const target = parseAddress(values.target, "--target");
  const maxBandwidth = values["max-bandwidth"]
    ? parseRate(values["max-bandwidth"], "--max-bandwidth")
    : undefined;
  const maxRounds = values["max-rounds"]
    ? parseCount(values["max-rounds"], "--max-rounds")
    : undefined;

  using gang = Gang.open(positionals.map((path) => ({ name: basename(path), path })), {
    seed: randomSeed(),
  });
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect(target);
  } catch (error) {
    throw new Error(
      `Cannot connect to the target ${values.target}: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
  const progress = progressLine("migrating");
  const report = await migrateGang(gang, conn, {
    maxBandwidth,
    maxRounds,
    token: values.token,
    onProgress: (p) =>
      progress.update(
        p.pagesDone,
        p.pagesTotal,
        `round ${p.round}, ${(p.bytesOnWire / 2 ** 20).toFixed(0)} MiB sent`,
      ),
  }).finally(() => progress.done());
  console.log(values.json ? JSON.stringify(sendJson(report)) : summary(report));
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
