/**
 * `deno task send -- --target HOST:PORT (--ca FILE --token-file FILE
 * [--server-name NAME] | --insecure) [--max-bandwidth BYTES_PER_S]
 * [--max-rounds N] [--compress auto|zstd|none] [--stall-timeout SECONDS]
 * [--json] [NAME=]FILE...`
 *
 * Migrates RAM files that nobody is writing (each file one guest, named
 * after the file, or NAME) to a target running `receive`, and reports each round.
 * Files nobody writes need one pass (no preparation scan, no live rounds:
 * they would read every page again to find nothing changed);
 * `--max-rounds N` (N > 1) runs live pre-copy rounds first, while
 * something still writes the files.
 *
 * `send` pauses nothing, so it never calls a copy verified that the
 * target does not hold as the final round ends: it re-checks each file's
 * size at the end of the final round, then reads the gang once more, and
 * fails (exit code 1, the target discards the gang) if any page changed
 * after the final round read it. Stop whatever writes the files before the
 * final round; to move running QEMU guests, which must be paused for it,
 * use `migrateQemuGang()` or `examples/evacuate.ts`.
 *
 * The transfer is TLS: the target's certificate must be signed by the CA
 * in `--ca` and name the target's address (or `--server-name`), and the
 * token in `--token-file` proves to the target who is sending. Plain TCP
 * needs `--insecure` (on both sides) and prints a warning.
 *
 * `--compress` chooses how page data travels: `auto` (the default)
 * compresses it with zstd while the link is the bottleneck (not where the
 * kernel measures that the link carries 2.5 times what the sender makes),
 * `zstd` always, `none` never; while it compresses, a page that differs
 * from one the target holds in few words goes as its difference (a
 * round's `deltas`).
 *
 * `--stall-timeout SECONDS` bounds how long a write to the target may make
 * no progress and how long an answer may take once the last bytes reached
 * the target, as the kernel tells (defaults 60 s and 120 s): a dead link
 * fails the migration instead of hanging it, and a slow one (down to
 * 0.5 Mbit/s) does not.
 *
 * Requires `--allow-ffi`, `--allow-read` (the RAM files, CA and token
 * files), `--allow-net` (the target) and `--allow-env=GANGWAY_LIB`
 * (`,INIT_CWD` too for relative paths from where `deno task` ran).
 *
 * @module
 */
import { basename, resolve } from "node:path";
import { Gang } from "../scan/gang.ts";
import { randomSeed } from "../transfer/seed.ts";
import { type MigrationReport, transferGang } from "../transfer/transfer_gang.ts";
import { callerPath, parseCli, runMain, stopOnSignals, UsageError } from "./_cli.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import { progressLine } from "./_progress.ts";
import { parseAddress, parseCount, parseDuration, parseRate } from "./_units.ts";
import { badGuestName } from "../transfer/hello_frame.ts";
import { connectTarget, type ConnectTargetOptions } from "../transport/connect_target.ts";
import { readPemFile, readTokenFile } from "../transport/credentials.ts";
import { printable } from "../_printable.ts";
import { errorMessage } from "../_errors.ts";

const USAGE = "usage: deno task send -- --target HOST:PORT " +
  "(--ca FILE --token-file FILE [--server-name NAME] | --insecure [--token-file FILE]) " +
  "[--max-bandwidth BYTES_PER_S] [--max-rounds N] [--compress auto|zstd|none] [--stall-timeout SECONDS] [--json] [NAME=]FILE...";

const INSECURE_WARNING = "warning: --insecure: guest RAM and the token cross the network " +
  "unencrypted and the target is not checked; use it only on a network you trust";

/** How to reach the target, from the transport flags (see the module doc). */
async function transportOptions(values: {
  ca?: string;
  "server-name"?: string;
  "token-file"?: string;
  insecure?: boolean;
}): Promise<{ connect: ConnectTargetOptions; token?: string }> {
  if (values.insecure) {
    if (values.ca !== undefined || values["server-name"] !== undefined) {
      throw new UsageError("--insecure cannot be combined with --ca or --server-name");
    }
    console.error(INSECURE_WARNING);
    const token = values["token-file"] ? await readTokenFile(values["token-file"]) : undefined;
    return { connect: { insecure: true }, token };
  }
  if (values.ca === undefined) {
    throw new UsageError(
      "--ca FILE is required (the CA that signed the target's certificate), " +
        "or --insecure for plain TCP on a network you trust",
    );
  }
  if (values["token-file"] === undefined) {
    throw new UsageError("--token-file FILE is required with TLS (the target's shared token)");
  }
  return {
    connect: {
      ca: await readPemFile(values.ca, "CA certificate"),
      serverName: values["server-name"],
    },
    token: await readTokenFile(values["token-file"]),
  };
}

/** The JSON document of `send --json`. */
export function sendJson(report: MigrationReport) {
  return {
    guests: report.guests,
    rounds: report.rounds.map((
      { round, seconds, bytesOnWire, pages, rematched, deltas, final },
    ) => ({
      round,
      seconds,
      bytesOnWire,
      pages,
      rematched,
      deltas,
      final,
    })),
    bytesOnWire: report.bytesOnWire,
    guestBytes: report.guestBytes,
    seconds: report.seconds,
    verified: report.verified,
    liveRoundsEnded: report.liveRoundsEnded,
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
      `unsent identical ${p.unsentIdentical}, sent identical ${p.sentIdentical} (${r.rematched} re-matched); ` +
      `${r.deltas} as deltas from similar pages`;
  });
  lines.push(
    `Moved ${mib(report.guestBytes)} of guest RAM with ${mib(report.bytesOnWire)} on the wire ` +
      `(${((report.bytesOnWire / report.guestBytes) * 100).toFixed(1)}%) in ${
        report.seconds.toFixed(2)
      } s; ` +
      `verified: ${report.verified}` +
      (report.liveRoundsEnded === "none"
        ? "."
        : `; the live rounds ended: ${report.liveRoundsEnded}.`),
  );
  return lines.join("\n");
}

/**
 * A guest on the command line: `FILE`, named after the file, or
 * `NAME=FILE` (NAME without a "/": `./a=b` is the file `a=b`).
 */
function guestArgument(argument: string): { name: string; path: string } {
  const equals = argument.indexOf("=");
  const named = equals > 0 && !argument.slice(0, equals).includes("/");
  const path = callerPath(named ? argument.slice(equals + 1) : argument);
  // A file whose own name has a "=" in it, and no file after the "=": the user meant the file.
  if (named && !exists(path) && exists(callerPath(argument))) {
    throw new UsageError(
      `"${printable(argument)}" names guest "${printable(argument.slice(0, equals))}" in the ` +
        `file "${printable(path)}", which does not exist; for the file "${
          printable(argument)
        }" write "./${printable(argument)}"`,
    );
  }
  return { name: named ? argument.slice(0, equals) : basename(path), path };
}

/**
 * Whether something is at this path (any kind: the RAM file's own checks come later). Not
 * `pathExists`: Deno refuses a stat under /dev, where guest RAM lives, without `--allow-all`,
 * and here any failure only means no hint.
 */
function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseCli(args, {
    target: { type: "string" },
    ca: { type: "string" },
    "server-name": { type: "string" },
    "token-file": { type: "string" },
    insecure: { type: "boolean" },
    "max-bandwidth": { type: "string" },
    "max-rounds": { type: "string" },
    compress: { type: "string" },
    "stall-timeout": { type: "string" },
    json: { type: "boolean" },
  }, { options: ["ca", "token-file"] });
  if (!values.target) throw new UsageError("--target is required");
  if (positionals.length === 0) throw new UsageError("no RAM files given");
  const target = parseAddress(values.target, "--target");
  const maxBandwidth = values["max-bandwidth"]
    ? parseRate(values["max-bandwidth"], "--max-bandwidth")
    : undefined;
  const maxRounds = values["max-rounds"] ? parseCount(values["max-rounds"], "--max-rounds") : 1;
  const stallMs = values["stall-timeout"]
    ? parseDuration(values["stall-timeout"], "--stall-timeout")
    : undefined;
  const compression = values.compress ?? "auto";
  if (!["auto", "zstd", "none"].includes(compression)) {
    throw new UsageError(`--compress needs auto, zstd or none, got "${compression}"`);
  }
  // The target's rules, checked before connecting.
  const guests = positionals.map(guestArgument);
  for (const [i, { name, path }] of guests.entries()) {
    const bad = badGuestName(name);
    const quoted = printable(JSON.stringify(name));
    if (bad) {
      throw new UsageError(`guest name ${quoted} of "${printable(path)}" is refused: ${bad}`);
    }
    const first = guests.findIndex((other) => other.name === name);
    if (first < i) {
      if (resolve(guests[first]!.path) === resolve(path)) {
        throw new UsageError(`"${printable(path)}" is given twice: a gang takes each file once`);
      }
      throw new UsageError(`two guests are named ${quoted}: name them NAME=FILE`);
    }
  }
  const transport = await transportOptions(values);

  using gang = Gang.open(guests, {
    seed: randomSeed(),
  });
  const conn = await connectTarget(target, transport.connect);
  const progress = progressLine("migrating");
  // Ctrl-C, SIGTERM, SIGHUP: the connection is cut, and the target discards what it received.
  using interrupt = stopOnSignals((signal) =>
    console.error(`send: ${signal}: stopping (${signal} again: exit now)`)
  );
  interrupt.signal.addEventListener("abort", () => conn.close(), { once: true });
  const report = await transferGang(gang, conn, {
    maxBandwidth,
    maxRounds,
    compression: compression as CompressionMode,
    token: transport.token,
    // send pauses nothing: a final round over files still written is refused, not verified.
    checkUnchanged: true,
    stallTimeoutMs: stallMs,
    answerTimeoutMs: stallMs,
    onProgress: (p) =>
      progress.update(
        p.pagesDone,
        p.pagesTotal,
        `round ${p.round}, ${(p.bytesOnWire / 2 ** 20).toFixed(0)} MiB sent`,
      ),
  }).finally(() => progress.done()).catch((error) => {
    if (!interrupt.signal.aborted) throw error;
    console.error(
      `send: ${errorMessage(interrupt.signal.reason)}: the target discards what it received`,
    );
    Deno.exit(interrupt.exitCode);
  });
  console.log(values.json ? JSON.stringify(sendJson(report)) : summary(report));
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
