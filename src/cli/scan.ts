/**
 * `deno task scan -- [--json] [--threads N|auto] FILE...`: the preparation phase
 * on RAM files.
 *
 * Scans each file as one guest of a gang and reports how many pages are
 * zero, unique or duplicates (within a guest or across guests): what gang
 * migration would send in full and what as a short reference. The page
 * work (reads, zero checks, hashes) runs on `--threads` threads; by default
 * (`auto`) on one thread or on every core (at most 8), whichever the scan
 * measures faster as it goes: on a host whose guests keep the cores busy,
 * more threads can be slower.
 *
 * Requires `--allow-read` (the files), `--allow-ffi` and
 * `--allow-env=GANGWAY_LIB` (`,INIT_CWD` too for relative paths from where
 * `deno task` ran, see callerPath). Run by URL, with no library built yet, the
 * first run builds it into the cache (src/native/library.ts says what that
 * needs; `-A` grants it).
 *
 * @module
 */
import { Gang } from "../scan/gang.ts";
import { scanGang, type ScanReport } from "../scan/scan_gang.ts";
import { parseCli, runMain, UsageError } from "./_cli.ts";
import { progressLine } from "./_progress.ts";
import { parseCount } from "./_units.ts";
import { MAX_SCAN_THREADS } from "../native/content_index.ts";
import { basename } from "node:path";

const USAGE = "usage: deno task scan -- [--json] [--threads N|auto] FILE...";

/** The JSON document of `scan --json` (field for field). */
export function scanJson(report: ScanReport) {
  return {
    pageSize: report.pageSize,
    guests: report.guests.map(({ path, pages, zero, unique, duplicate }) => ({
      path,
      pages,
      zero,
      unique,
      duplicate,
    })),
    totals: report.totals,
    seconds: report.seconds,
    threads: report.threads,
  };
}

/** `part` as a share of `whole` (which is more than 0: a gang of zero pages says so instead). */
function percent(part: number, whole: number): string {
  return `${((part / whole) * 100).toFixed(1)}%`;
}

/** The readable table of a scan. */
export function scanTable(report: ScanReport): string {
  const rows = [
    ["guest", "pages", "zero", "unique", "duplicate", "within", "across"],
    ...report.guests.map((g) => [
      basename(g.path),
      g.pages,
      g.zero,
      g.unique,
      g.duplicate,
      g.duplicateWithin,
      g.duplicateAcross,
    ]),
  ];
  const t = report.totals;
  rows.push([
    "total",
    t.pages,
    t.zero,
    t.unique,
    t.duplicate,
    t.duplicateWithin,
    t.duplicateAcross,
  ]);
  const cells = rows.map((row) =>
    row.map((cell) => typeof cell === "number" ? cell.toLocaleString("en-US") : cell)
  );
  const widths = cells[0]!.map((_, c) => Math.max(...cells.map((row) => row[c]!.length)));
  const lines = cells.map((row) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")
  );
  const nonZero = t.pages - t.zero;
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  lines.push(
    "",
    `Guest RAM ${mib(t.bytes)} in ${t.pages.toLocaleString("en-US")} page${
      t.pages === 1 ? "" : "s"
    }, ` +
      `${t.unique.toLocaleString("en-US")} distinct non-zero contents (${mib(t.uniqueBytes)}).`,
    nonZero === 0
      ? "Every page is zero: nothing but where they are to send."
      : `Gang dedup sends ${percent(nonZero - t.unique, nonZero)} less page data than sending ` +
        `every non-zero page (${
          percent(t.duplicateAcross, nonZero)
        } from pages shared across guests).`,
    `Scanned in ${report.seconds.toFixed(2)} s ` +
      `(${(t.bytes / report.seconds / 1e9).toFixed(2)} GB/s of guest RAM, ` +
      `${report.threads === 1 ? "one thread" : `${report.threads} threads`}).`,
  );
  return lines.join("\n");
}

/** `--threads N`: 1 to 8 (beyond, a scan is bound by memory; the C library runs at most 8). */
function parseThreads(text: string): number {
  const threads = parseCount(text, "--threads");
  if (threads > MAX_SCAN_THREADS) {
    throw new UsageError(`--threads needs 1 to ${MAX_SCAN_THREADS} or auto, got "${text}"`);
  }
  return threads;
}

function main(args: string[]): void {
  const { values, positionals } = parseCli(args, {
    json: { type: "boolean" },
    threads: { type: "string" },
  }, { positionals: true });
  if (positionals.length === 0) throw new UsageError("no RAM files given");
  const threads = values.threads === undefined || values.threads === "auto"
    ? "auto"
    : parseThreads(values.threads);
  using gang = Gang.open(positionals.map((path) => ({ name: path, path })));
  const progress = progressLine("scanning");
  const report = scanGang(gang, {
    threads,
    onProgress: (done, total) => progress.update(done, total),
  });
  progress.done();
  console.log(values.json ? JSON.stringify(scanJson(report)) : scanTable(report));
}

if (import.meta.main) {
  // Any failure here is about the input files: exit code 2, like a usage error.
  await runMain(() => main(Deno.args), USAGE, 2);
}
