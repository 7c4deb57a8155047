/**
 * `deno task lab -- [--guests N] [--memory SIZE] [--link RATE] [--idle SECONDS]
 * [--image NAME[,NAME...]] [--workload idle|busy|pgbench|web] [--compare LIST] [--kernel-args "..."] [--json FILE]
 * [--out DIR] [--sweep-guests LIST] [--sweep-memory LIST] [--network MODE] [--insecure]
 * [--gangway-compression auto|zstd|none] [--gangway-final-rounds gang|per-guest]
 * [--baseline-ram anonymous|file] [--qemu-binary PATH] [--accel tcg|kvm] [--storage shared|copy]
 * [--max-throttle PERCENT [--throttle-initial PERCENT] [--throttle-step PERCENT]]`
 *
 * The lab, gangway's main command: two hosts on this machine (network
 * namespaces joined by a shaped veth link), a gang of QEMU guests booted on
 * the source host, migrated to the target host by gangway and, on a fresh
 * gang booted the same way, by QEMU's own live migration; then a summary
 * table (bytes on the link, total migration time, downtime, guests resumed,
 * ratios). Progress goes to stderr, the summary to stdout. With no flags: 4
 * idle guests of 256 MiB of the busybox image, idle 10 s, over 1 Gbit/s,
 * against QEMU's default migration. `--image` picks the image, or cycles
 * several across the guests (a mixed gang); a Debian image missing from
 * the cache is built first (as root, a minute or two each). Gangway sends over TLS (a throwaway CA made for the run), or
 * plain TCP like QEMU's migration with --insecure; it compresses page data
 * as its engine does by default (auto: zstd while the link is the
 * bottleneck), or always, or never (dedup alone) with --gangway-compression. Sweeps write JSON, SVG
 * figures and summary.md into --out. The QEMU methods' guests keep their
 * RAM in QEMU's default anonymous memory (--baseline-ram file: in shared
 * files, as gangway's). The Debian guests' disks are on storage both
 * hosts see; with --storage copy, gangway copies each guest's overlay to
 * host B instead (the QEMU methods still share it). With --max-throttle, every
 * method auto-converges: gangway throttles the guests' vCPUs while its rounds
 * stop shrinking, QEMU's methods run with `auto-converge`, both by the same
 * steps (--throttle-initial, then --throttle-step more each time: QEMU's
 * 20 and 10 by default) up to that share of the guests' time. A run whose estimated memory does not fit is
 * refused before anything boots. The exit status is 1 when gangway lost a
 * guest or could not verify its RAM; a guest a QEMU method lost is a
 * warning. Everything it starts is ended and removed at the end, after a
 * failure or on Ctrl-C. See docs/lab.md.
 *
 * Requires `--allow-run` (ip, tc, QEMU, deno for the gang runner, ps, rm...;
 * full access anyway), `--allow-read`, `--allow-write` (image cache, run
 * directory, results), `--allow-net` (QMP sockets), `--allow-env` (cache
 * directory, GANGWAY_LIB for the runner), and root for the namespaces.
 *
 * @module
 */
import {
  DEFAULT_LAB_CONFIG,
  type DiskStorage,
  finalRoundsOf,
  type LabConfig,
  type LabResult,
  refuseUnlessLabFits,
  runLab,
} from "../lab/experiment.ts";
import { judgeLostGuests } from "../lab/lost_guests.ts";
import { hostMemory, oomKillCount } from "../lab/memory_budget.ts";
import { labJson } from "../lab/report.ts";
import { applicationChart } from "../lab/app_plot.ts";
import { LabSession } from "../lab/session.ts";
import { formatSummary } from "../lab/summary.ts";
import {
  runSweep,
  type SweepAxis,
  sweepPoint,
  type SweepResult,
  sweepSummary,
  writeSweepFiles,
} from "../lab/sweep.ts";
import { parseRate as parseLinkRate } from "../lab/link_rate.ts";
import { pendingSignal } from "../lab/netns_signal.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { FinalRounds } from "../gang_migration.ts";
import { WORKLOAD_MODES, type WorkloadMode } from "../qemu/_guest_init.ts";
import { IMAGE_NAMES, type ImageName, imageWorkloads } from "../qemu/guest_image.ts";
import { callerPath, parseCli, runMain, UsageError } from "./_cli.ts";
import { checkDurationSeconds, parseCount, parseSize, parseThrottleFlags } from "./_units.ts";
import { errorMessage } from "../_errors.ts";
import { delay } from "../_delay.ts";

const USAGE = "usage: deno task lab -- [--guests N] [--memory SIZE] [--link RATE] " +
  "[--idle SECONDS] [--image NAME[,NAME...]] [--workload idle|busy|pgbench|web] " +
  "[--compare qemu,qemu-zstd] [--kernel-args ARGS] " +
  "[--json FILE] [--out DIR] [--sweep-guests 1,2,4,8] [--sweep-memory 256M,512M,1G] " +
  "[--network auto|netns|loopback] [--insecure] [--gangway-compression auto|zstd|none] " +
  "[--gangway-final-rounds gang|per-guest] " +
  "[--baseline-ram anonymous|file] [--qemu-binary PATH] [--accel tcg|kvm] [--storage shared|copy] " +
  "[--max-throttle PERCENT [--throttle-initial PERCENT] [--throttle-step PERCENT]]";

/** Longest wait for the signal handler to exit (its cleanups get at most 20 s). */
const SIGNAL_EXIT_WAIT_MS = 25_000;

/** Where sweeps write their files unless told. */
const DEFAULT_OUT = "lab-results";

/** What the command line asks for. */
export interface LabCommand {
  /** The experiment (or the base of the sweeps). */
  config: LabConfig;
  /** Link rate. */
  link: string;
  /** Network mode. */
  network: "auto" | "netns" | "loopback";
  /** Write the JSON report here. */
  json?: string;
  /** Write files here (sweeps: always, default lab-results). */
  out?: string;
  /** Numbers of guests to sweep. */
  sweepGuests?: number[];
  /** Guest sizes in MiB to sweep (one guest each). */
  sweepMemory?: number[];
}

/**
 * Reads the lab's command line.
 *
 * Needs no permission.
 *
 * @param args The arguments (a leading "--" is dropped)
 * @returns What to run
 * @throws UsageError when an argument is wrong
 */
export function parseLabArgs(args: string[]): LabCommand {
  const { values, positionals } = parseCli(args, {
    guests: { type: "string" },
    memory: { type: "string" },
    link: { type: "string" },
    idle: { type: "string" },
    workload: { type: "string" },
    image: { type: "string" },
    compare: { type: "string" },
    "kernel-args": { type: "string" },
    json: { type: "string" },
    out: { type: "string" },
    "sweep-guests": { type: "string" },
    "sweep-memory": { type: "string" },
    network: { type: "string" },
    insecure: { type: "boolean" },
    "gangway-compression": { type: "string" },
    storage: { type: "string" },
    "gangway-final-rounds": { type: "string" },
    "baseline-ram": { type: "string" },
    "qemu-binary": { type: "string" },
    accel: { type: "string" },
    "max-throttle": { type: "string" },
    "throttle-initial": { type: "string" },
    "throttle-step": { type: "string" },
  }, { options: ["json", "out"] });
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const link = values.link ?? "1gbit";
  try {
    parseLinkRate(link);
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  const workload = workloadMode(values.workload ?? DEFAULT_LAB_CONFIG.workload);
  const images = values.image ? imageNames(values.image) : [...DEFAULT_LAB_CONFIG.images ?? []];
  const unable = images.filter((name) => !imageWorkloads(name).includes(workload));
  if (unable.length > 0) {
    const able = IMAGE_NAMES.filter((name) => imageWorkloads(name).includes(workload));
    throw new UsageError(
      `--workload ${workload} needs images that run it (${able.join(", ")}): ` +
        `${[...new Set(unable)].join(", ")} cannot`,
    );
  }
  const network = values.network ?? "auto";
  if (network !== "auto" && network !== "netns" && network !== "loopback") {
    throw new UsageError(`--network must be auto, netns or loopback, got "${network}"`);
  }
  const baselineRam = values["baseline-ram"] ?? "anonymous";
  if (baselineRam !== "anonymous" && baselineRam !== "file") {
    throw new UsageError(`--baseline-ram must be anonymous or file, got "${baselineRam}"`);
  }
  const accelerator = values.accel ?? "tcg";
  if (accelerator !== "tcg" && accelerator !== "kvm") {
    throw new UsageError(`--accel must be tcg or kvm, got "${accelerator}"`);
  }
  const qemuBinary = values["qemu-binary"];
  // Gangway finds its guests' QEMUs by their program's name: it must stay qemu-system-*.
  if (
    qemuBinary !== undefined &&
    !/^([A-Za-z0-9_.+-]*\/)*qemu-system-[A-Za-z0-9_.+-]+$/.test(qemuBinary)
  ) {
    throw new UsageError(
      `--qemu-binary must be a path to a qemu-system-* program, got "${qemuBinary}"`,
    );
  }
  const storage = diskStorage(values.storage ?? DEFAULT_LAB_CONFIG.storage ?? "shared");
  const config: LabConfig = {
    guests: values.guests ? parseCount(values.guests, "--guests") : DEFAULT_LAB_CONFIG.guests,
    memoryMiB: values.memory ? mebibytes(values.memory, "--memory") : DEFAULT_LAB_CONFIG.memoryMiB,
    idleSeconds: values.idle ? seconds(values.idle, "--idle") : DEFAULT_LAB_CONFIG.idleSeconds,
    workload,
    images,
    kernelArgs: (values["kernel-args"] ?? "").split(/\s+/).filter((arg) => arg !== ""),
    compare: values.compare ? compared(values.compare) : [...DEFAULT_LAB_CONFIG.compare],
    insecure: values.insecure ?? false,
    gangwayCompression: compression(values["gangway-compression"] ?? "auto"),
    storage,
    gangwayFinalRounds: finalRoundsOf({
      gangwayFinalRounds: values["gangway-final-rounds"] === undefined
        ? undefined
        : finalRounds(values["gangway-final-rounds"]),
      storage,
    }),
    baselineRam,
    accelerator,
    ...(qemuBinary !== undefined ? { qemuBinary } : {}),
    ...parseThrottleFlags(values),
  };
  return {
    config,
    link,
    network,
    json: values.json,
    out: values.out,
    sweepGuests: values["sweep-guests"]
      ? list(values["sweep-guests"], (v) => parseCount(v, "--sweep-guests"))
      : undefined,
    sweepMemory: values["sweep-memory"]
      ? list(values["sweep-memory"], (v) => mebibytes(v, "--sweep-memory"))
      : undefined,
  };
}

/**
 * The command line that reproduces a run, quoted for a POSIX shell.
 *
 * Needs no permission.
 *
 * @param args The arguments given
 * @returns e.g. `deno task lab -- --guests 8`
 */
export function reproduceCommand(args: string[]): string {
  const rest = args[0] === "--" ? args.slice(1) : args;
  const quoted = rest.map((arg) =>
    /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`
  );
  return ["deno task lab", ...(quoted.length > 0 ? ["--", ...quoted] : [])].join(" ");
}

async function main(args: string[]): Promise<void> {
  const command = parseLabArgs(args);
  const line = reproduceCommand(args);
  // Refuse a run that cannot fit before anything is made (each point again before it boots).
  const host = await hostMemory();
  for (const config of plannedConfigs(command)) refuseUnlessLabFits(config, host);
  await using session = await LabSession.open({
    link: command.link,
    network: command.network,
    images: command.config.images,
  });
  session.say(`hosts: ${session.network.describe()}`);
  if (session.network.mode === "loopback") {
    session.say(
      `no namespaces (${session.network.reason}): loopback, each method capped at the link's rate`,
    );
  }
  const sweeps: SweepResult[] = [];
  if (command.sweepGuests) {
    sweeps.push(await runSweep(session, command.config, "guests", command.sweepGuests));
  }
  if (command.sweepMemory) {
    sweeps.push(await runSweep(session, command.config, "memory", command.sweepMemory));
  }
  // The whole run's, a method that failed included (its result, and its count, are not kept).
  const oomKillsBefore = await oomKillCount();
  let results: LabResult[];
  if (sweeps.length > 0) {
    const written = await writeSweepFiles(command.out ?? callerPath(DEFAULT_OUT), sweeps, line);
    if (command.json) {
      const document = sweeps.map((s) => ({
        sweep: s.axis,
        points: s.points.map((p) => labJson(p, line)),
      }));
      await Deno.writeTextFile(command.json, JSON.stringify({ sweeps: document }, null, 2) + "\n");
    }
    console.log(sweepSummary(sweeps, line));
    session.say(`wrote ${written.join(", ")}`);
    results = sweeps.flatMap((s) => s.points);
  } else {
    const result = await runLab(session, command.config);
    console.log(formatSummary(result));
    if (command.json) {
      await Deno.writeTextFile(command.json, JSON.stringify(labJson(result, line), null, 2) + "\n");
      const svg = await applicationChart(result);
      if (svg) {
        const figure = command.json.replace(/\.json$/, "") + "-application.svg";
        await Deno.writeTextFile(figure, svg);
        session.say(`wrote ${figure}`);
      }
    }
    if (command.out) {
      const written = await writeSweepFiles(
        command.out,
        [{ axis: "guests", points: [result] }],
        line,
      );
      session.say(`wrote ${written.join(", ")}`);
    }
    results = [result];
  }
  const { failures, warnings } = judgeLostGuests(results);
  for (const warning of warnings) console.error(`warning: ${warning}`);
  const oomKillsAfter = await oomKillCount();
  const oomKills = oomKillsBefore === null || oomKillsAfter === null
    ? null
    : oomKillsAfter - oomKillsBefore;
  session.say(
    oomKills === null
      ? "cannot tell whether the kernel's OOM killer killed anything (no /proc/vmstat)"
      : oomKills > 0
      ? `the kernel's OOM killer killed ${oomKills} processes during the run (dmesg says which)`
      : "the kernel's OOM killer killed nothing during the run",
  );
  if (failures.length > 0) {
    throw new Error(`Cannot call the lab run good: ${failures.join("; ")}`);
  }
}

/** Every experiment the command will run: its sweeps' points, or the one run. */
function plannedConfigs(command: LabCommand): LabConfig[] {
  const sweeps: [SweepAxis, number[] | undefined][] = [
    ["guests", command.sweepGuests],
    ["memory", command.sweepMemory],
  ];
  const points = sweeps.flatMap(([axis, values]) =>
    (values ?? []).map((value) => sweepPoint(command.config, axis, value))
  );
  return points.length > 0 ? points : [command.config];
}

function mebibytes(text: string, flag: string): number {
  const bytes = parseSize(text, flag);
  if (bytes % 2 ** 20 !== 0) throw new UsageError(`${flag} must be whole MiB, got "${text}"`);
  return bytes / 2 ** 20;
}

function seconds(text: string, flag: string): number {
  // Decimal only: Number() would also take "0x10", "1e3" and " 5 ".
  const value = /^\d+(?:\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(value) || value < 0) {
    throw new UsageError(`${flag} needs seconds (0 or more), got "${text}"`);
  }
  return checkDurationSeconds(value, text, flag);
}

function compared(text: string): LabConfig["compare"] {
  if (text === "none") return []; // gangway alone
  const methods = list(text, (name) => {
    if (name !== "qemu" && name !== "qemu-zstd") {
      throw new UsageError(`--compare takes qemu and qemu-zstd, or none, got "${name}"`);
    }
    return name;
  });
  return [...new Set(methods)];
}

function diskStorage(text: string): DiskStorage {
  if (text !== "shared" && text !== "copy") {
    throw new UsageError(`--storage must be shared or copy, got "${text}"`);
  }
  return text;
}

function workloadMode(text: string): WorkloadMode {
  const mode = WORKLOAD_MODES.find((m) => m === text);
  if (!mode) throw new UsageError(`--workload must be ${WORKLOAD_MODES.join(", ")}, got "${text}"`);
  return mode;
}

function imageNames(text: string): ImageName[] {
  return list(text, (name) => {
    const image = IMAGE_NAMES.find((known) => known === name);
    if (!image) throw new UsageError(`--image takes ${IMAGE_NAMES.join(", ")}, got "${name}"`);
    return image;
  });
}

function compression(text: string): CompressionMode {
  if (text !== "auto" && text !== "zstd" && text !== "none") {
    throw new UsageError(`--gangway-compression must be auto, zstd or none, got "${text}"`);
  }
  return text;
}

function finalRounds(text: string): FinalRounds {
  if (text !== "gang" && text !== "per-guest") {
    throw new UsageError(`--gangway-final-rounds must be gang or per-guest, got "${text}"`);
  }
  return text;
}

function list<T>(text: string, each: (item: string) => T): T[] {
  const items = text.split(",").map((item) => item.trim()).filter((item) => item !== "");
  if (items.length === 0) throw new UsageError(`expected a comma-separated list, got "${text}"`);
  return items.map(each);
}

if (import.meta.main) {
  await runMain(async () => {
    try {
      await main(Deno.args);
    } catch (error) {
      // Ctrl-C: the signal handler cleans up and exits with 128 + the signal;
      // what failed because it ended the processes is no error to report.
      if (pendingSignal() === null) throw error;
      await delay(SIGNAL_EXIT_WAIT_MS);
    }
  }, USAGE);
}
