/**
 * The summary a lab run prints at the end: the set-up, a table with one
 * row per method, the guests lost and why, the ratios, where gangway's
 * time went, the OOM killer's doing and the goals. Pure functions: no
 * permissions needed.
 *
 * @module
 */
import { type ThrottleSteps, withDefaultSteps } from "../plan/convergence.ts";
import type { LabResult } from "./experiment.ts";
import type { CompressionEstimate, CompressionReport } from "../transfer/compression_policy.ts";
import type { GangwayBreakdown, MethodResult } from "./measurement.ts";
import { formatLostGuests, lostGuests } from "./lost_guests.ts";
import { gangwayOf, goalVerdicts, ratioBase, ratiosOf } from "./report.ts";
import type { ApplicationView, WindowFigures } from "./app_view.ts";
import { describeWarmed } from "./warm_memory.ts";

/**
 * The summary printed at the end of a run: the setup, one row per method
 * (bytes on the link, each tool's own count, TMT, downtime, guests resumed,
 * rounds), the ratios, where gangway's time went, and the goals.
 *
 * @param result The experiment
 * @returns Lines of text
 */
export function formatSummary(result: LabResult): string {
  const { config } = result;
  const gangway = gangwayOf(result);
  const base = ratioBase(result);
  const kernel = config.kernelArgs.length > 0
    ? `kernel args "${config.kernelArgs.join(" ")}"`
    : "kernel defaults (KASLR on)";
  const lines = [
    `${config.guests} guests x ${config.memoryMiB} MiB, ${config.workload} workload, ` +
    `idle ${config.idleSeconds} s, link ${result.link}`,
    `hosts: ${result.network.description}; gangway over ${
      gangway.gangway?.transport === "tcp" ? "plain TCP (--insecure)" : "TLS"
    } with compression ${gangway.gangway?.compression.mode ?? "?"}, ending ${
      config.gangwayFinalRounds ?? "per-guest"
    }, QEMU over plain TCP`,
    `image: ${result.image.kernel} + ${result.image.initramfs}, ${kernel}; ` +
    `QEMU ${versions(result.methods)}`,
    "",
    table([
      [
        "method",
        "guest RAM",
        "bytes on link",
        "own count",
        "TMT",
        "downtime mean / max",
        "resumed",
        "lost",
        "rounds",
      ],
      ...result.methods.map((m) => [
        m.method,
        ramWords(m),
        `${megabytes(m.bytesOnWire)} MB`,
        `${megabytes(m.toolBytes)} MB`,
        `${m.tmtSeconds.toFixed(2)} s`,
        `${mean(m.downtimeMs).toFixed(0)} / ${Math.max(...m.downtimeMs).toFixed(0)} ms`,
        `${m.resumed}/${config.guests}`,
        lostCell(m),
        m.gangway
          ? `${m.gangway.rounds}${m.gangway.verified ? ", verified" : ", NOT verified"}`
          : "-",
      ]),
    ]),
    ...formatLostGuests(result.methods),
    ...(result.failed ?? []).map((f) => `${f.method} did not complete: ${f.error}`),
    "",
    ...result.methods.filter((m) => m.method !== "gangway").map((m) => formatRatios(gangway, m)),
  ];
  const viewed = result.methods.filter((m) => m.application);
  if (viewed.length > 0) {
    lines.push(`the application's view (${config.workload}, the whole gang; host time):`);
    for (const m of viewed) lines.push(`  ${m.method}: ${formatApplication(m.application!)}`);
  }
  if (gangway.gangway) {
    lines.push(`gangway's time: ${formatBreakdown(gangway.gangway.breakdown)}`);
    const rounds = formatRoundTimes(gangway.gangway.breakdown);
    if (rounds) lines.push(`gangway's rounds: ${rounds}`);
    const downtime = formatDowntimeParts(gangway.gangway.breakdown);
    if (downtime) lines.push(`gangway's downtime per guest: ${downtime}`);
    lines.push(`gangway's compression: ${formatCompression(gangway.gangway.compression)}`);
    if (config.throttle) {
      lines.push(formatThrottle(config.throttle, gangway.gangway.breakdown));
    }
  }
  const loads = result.methods.map((m) => `${m.method} ${m.loadAverage.toFixed(2)}`).join(", ");
  lines.push(
    `host load average (1 min, the boot included) as each migration started, ` +
      `${navigator.hardwareConcurrency} CPUs: ${loads}`,
  );
  const warmed = result.methods.map((m) => `${m.method} ${describeWarmed(m.warmedMemory)}`)
    .join(", ");
  lines.push(`memory made ready just before each migration (docs/lab.md, Fairness): ${warmed}`);
  lines.push(formatOomKills(result.methods, result.failed ?? []));
  const goals = goalVerdicts(result);
  if (!base && result.failed) {
    lines.push("goals: judged against a QEMU method, and none that was compared completed");
  } else if (!base) {
    lines.push("goals: judged against a QEMU method, and none was compared (--compare none)");
  } else if (goals.length > 0) {
    lines.push(
      `goals (4 or more guests, against the best QEMU method of this run, ${base.method}):`,
    );
    for (const g of goals) lines.push(`  ${g.met ? "met   " : "missed"} ${g.goal}: ${g.measured}`);
  } else {
    lines.push(`goals: judged from 4 guests on (this run has ${config.guests})`);
  }
  return lines.join("\n");
}

/**
 * Auto-converge in words: the most every method could hold back, and what
 * gangway's rounds did.
 */
export function formatThrottle(steps: ThrottleSteps, b: GangwayBreakdown): string {
  const percent = (share: number) => `${Math.round(share * 100)}%`;
  const throttled = b.rounds.filter((r) => r.throttle);
  const { max, initial, step } = withDefaultSteps(steps);
  return `auto-converge (every method: ${percent(initial)}, then ${percent(step)} more, ` +
    `at most ${percent(max)} of the guests' time): ` +
    (throttled.length === 0
      ? "gangway's rounds converged unthrottled"
      : `gangway throttled its guests ${
        throttled.map((r) => `${percent(r.throttle!)} in round ${r.round}`).join(", ")
      }`);
}

/**
 * Gangway's traffic and TMT as ratios to another method's, in words.
 *
 * @param gangway Gangway's measurement
 * @param other The other method's
 * @returns One line, the ratios to 2 decimals
 */
export function formatRatios(gangway: MethodResult, other: MethodResult): string {
  const r = ratiosOf(gangway, other);
  return `gangway / ${other.method}: traffic ${r.traffic.toFixed(2)}x, TMT ${r.tmt.toFixed(2)}x`;
}

/** Where a method's guests kept their RAM, in words: "shared file, huge pages", "anonymous". */
export function ramWords(m: Pick<MethodResult, "ram" | "hugePages">): string {
  return `${m.ram === "file" ? "shared file" : "anonymous"}${m.hugePages ? ", huge pages" : ""}`;
}

/**
 * The application's view of one method in words: throughput (and the
 * median per-second p99) before, during and after the migration, the
 * longest stall, and whether the service came back.
 *
 * @param view The view
 * @returns One line
 */
export function formatApplication(view: ApplicationView): string {
  const part = (name: string, w: WindowFigures) =>
    `${name} ${w.tps.toFixed(1)} tps` + (w.p99Ms === null ? "" : ` (p99 ${w.p99Ms.toFixed(1)} ms)`);
  const ratio = view.before.tps > 0
    ? ` = ${(view.during.tps / view.before.tps).toFixed(2)}x before`
    : "";
  const ms = (value: number | null) => value === null ? "?" : `${value.toFixed(0)} ms`;
  const stall = `${ms(view.longestStallMs)} (before it: ${ms(view.longestStallBeforeMs)})`;
  return `${part("before", view.before)}, ${part("during", view.during)}${ratio}, ` +
    `${part("after", view.after)}; longest stall ${stall}; ` +
    (view.cameBack ? "came back" : "did NOT come back");
}

/**
 * Gangway's time in words: setup (outside the TMT), scan, live rounds,
 * paused part, switch-over.
 *
 * @param b The breakdown
 * @returns One line
 */
export function formatBreakdown(b: GangwayBreakdown): string {
  const live = b.rounds.filter((r) => !r.final && r.guest === undefined && r.caughtUp === undefined)
    .map((r) => r.seconds.toFixed(2));
  // A guest that wrote much before its final round: a live round of it alone first.
  const catchUps = b.rounds.filter((r) => r.caughtUp !== undefined)
    .map((r) => `${r.seconds.toFixed(2)} s (guest ${r.caughtUp! + 1})`);
  // Guests ended one at a time: each one's final round, with only that guest paused.
  const guests = b.rounds.filter((r) => r.guest !== undefined).map((r) => r.seconds.toFixed(2));
  const final = b.rounds.find((r) => r.final);
  const pausing = b.pausingSeconds === undefined
    ? ""
    : `pausing ${b.pausingSeconds.toFixed(2)} s + `;
  const verify = b.verifySeconds === undefined
    ? "verify"
    : `verify ${b.verifySeconds.toFixed(2)} s`;
  return `setup ${b.setupSeconds.toFixed(2)} s (before the TMT), ` +
    `handshake ${b.handshakeSeconds.toFixed(2)} s, ` +
    `live rounds ${live.length > 0 ? live.join(" + ") : "none"} s, ` +
    (catchUps.length > 0 ? `catch-up rounds ${catchUps.join(" + ")}, ` : "") +
    (guests.length > 0 ? `each guest's final round ${guests.join(" + ")} s, ` : "") +
    `paused ${b.pausedSeconds.toFixed(2)} s (${pausing}final round ${
      final?.seconds.toFixed(2) ?? "?"
    } s + ${verify}), ` +
    `switch-over ${b.switchOverSeconds.toFixed(2)} s`;
}

/** "final", a guest's final round ("guest 2's final"), its catch-up ("guest 2's catch-up"), or the round's number. */
function roundName(r: GangwayBreakdown["rounds"][number]): string {
  if (r.final) return "final";
  if (r.caughtUp !== undefined) return `guest ${r.caughtUp + 1}'s catch-up`;
  return r.guest === undefined ? `${r.round}` : `guest ${r.guest + 1}'s final`;
}

/**
 * Where each round's time went, in words: reading and hashing pages, waiting for zstd,
 * waiting for the link, waiting for the target's answer, and the
 * rest (planning and framing). Empty when the report predates the split.
 *
 * @param b The breakdown
 * @returns One line, or "" when no round has the split
 */
export function formatRoundTimes(b: GangwayBreakdown): string {
  const parts: string[] = [];
  for (const r of b.rounds) {
    if (!r.time) continue;
    const t = r.time;
    const other = r.seconds - t.scanSeconds - t.planSeconds - t.compressSeconds -
      t.linkWaitSeconds - t.receiverWaitSeconds;
    parts.push(
      `${roundName(r)} ${r.seconds.toFixed(2)} s = scan ${t.scanSeconds.toFixed(2)} + plan ${
        t.planSeconds.toFixed(2)
      } + zstd wait ${t.compressSeconds.toFixed(2)} + link wait ${
        t.linkWaitSeconds.toFixed(2)
      } + answer wait ${t.receiverWaitSeconds.toFixed(2)} + other ${Math.max(0, other).toFixed(2)}${
        t.compression ? ` (${formatEstimate(t.compression)})` : ""
      }`,
    );
  }
  return parts.join("; ");
}

/**
 * What each guest's downtime was made of, in words: its final round (until
 * applied at the target), the switch-over's setup, the device state, the
 * wait for the verification, starting the destination. Empty when the
 * report predates the split.
 *
 * @param b The breakdown
 * @returns One line, or ""
 */
export function formatDowntimeParts(b: GangwayBreakdown): string {
  const ms = (value: number) => value.toFixed(0);
  return (b.downtimeParts ?? []).flatMap((p, i) =>
    p
      ? [
        `${i + 1}: final round ${ms(p.beforeSwitchOverMs)} + setup ${ms(p.setupMs)} + ` +
        `device state ${ms(p.deviceStateMs)} + verify wait ${ms(p.verifyWaitMs)} + ` +
        `cont ${ms(p.runMs)} ms`,
      ]
      : []
  ).join("; ");
}

/** The compression policy's view in words: the three rates, the ratio and the share it chose. */
function formatEstimate(e: CompressionEstimate): string {
  const rate = (bytesPerSecond: number) =>
    bytesPerSecond > 0
      ? `${(bytesPerSecond / 1e6).toFixed(bytesPerSecond < 10e6 ? 2 : 0)} MB/s` // a slow link's too
      : "?";
  const capacity = (e.linkCapacityBytesPerSecond ?? 0) > 0
    ? ` (carries ${rate(e.linkCapacityBytesPerSecond!)}${e.linkFast ? ": fast" : ""})`
    : "";
  // The sender's busy time over the page data it sent: a round of references and zero runs sends
  // little page data for its work, so this reads low there without the sender being slow.
  return `link ${rate(e.linkBytesPerSecond)}${capacity}, page data per busy second ${
    rate(e.cpuBytesPerSecond)
  }, zstd ${rate(e.zstdBytesPerSecond)} to ${e.ratio.toFixed(2)}: compressing ${
    (e.share * 100).toFixed(0)
  }%`;
}

/**
 * Gangway's compression in words: its mode, and how much page data the
 * compressed frames carried before and after.
 *
 * @param c What compression did
 * @returns One line
 */
export function formatCompression(c: CompressionReport): string {
  const pages = c.frames === 0
    ? `${c.mode}, no frame sent compressed`
    : `${c.mode}, ${c.frames} frames: ${megabytes(c.rawBytes)} MB of page data sent as ` +
      `${megabytes(c.compressedBytes)} MB (${(c.compressedBytes / c.rawBytes).toFixed(2)})`;
  const deltas = c.deltaPages ? `, ${c.deltaPages} pages of it as deltas from similar pages` : "";
  return pages + deltas;
}

/** The table's "lost" cell: how many, and how many of those crashed. */
function lostCell(m: MethodResult): string {
  const lost = lostGuests(m);
  if (lost.length === 0) return "-";
  const crashed = lost.filter((g) => g.kernelCrash).length;
  return crashed > 0 ? `${lost.length} (${crashed} kernel crash)` : String(lost.length);
}

/** "7.2.22 under tcg", or each method's when they differ. */
function versions(methods: readonly MethodResult[]): string {
  const each = methods.map((m) => `${m.qemuVersion} under ${m.accelerator}`);
  if (new Set(each).size === 1) return each[0]!;
  return methods.map((m, i) => `${m.method} ${each[i]}`).join(", ");
}

/** What the kernel's OOM killer did during the run, the methods that failed included, in one line. */
function formatOomKills(
  methods: readonly MethodResult[],
  failed: NonNullable<LabResult["failed"]>,
): string {
  if (methods.some((m) => m.oomKills === null)) {
    return "kernel OOM killer: unknown (its counter in /proc/vmstat could not be read)";
  }
  const killed = [
    ...methods.filter((m) => m.oomKills! > 0).map((m) => ({ ...m, failed: false })),
    ...failed.filter((f) => f.oomKills! > 0).map((f) => ({ ...f, failed: true })),
  ];
  if (killed.length === 0) return "kernel OOM killer: killed nothing during the run";
  return `kernel OOM killer: killed ${
    killed.map((k) =>
      `${k.oomKills} processes during ${k.method}${k.failed ? " (which did not complete)" : ""}`
    ).join(", ")
  } (dmesg says which): figures of those methods are suspect`;
}

/**
 * Lays rows out as a text table: the first column left-aligned, the
 * others right-aligned.
 *
 * @param rows The rows, header first
 * @returns The table's lines joined
 */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]?.length ?? 0)));
  return rows.map((row) =>
    row.map((cell, col) => col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))
      .join("  ").trimEnd()
  ).join("\n");
}

function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

function mean(values: number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / Math.max(1, values.length);
}
