/**
 * The gangway side of a lab run, as its own process on the lab's source
 * host: one Deno process cannot be in two network namespaces, and
 * gangway's sender must send over the lab link. It attaches to the running
 * source guests by their QMP sockets, starts a target (receiver and
 * destination QEMUs, on the target host), migrates the gang with
 * `migrateQemuGang`, times it, and leaves the destinations running for the
 * lab to check. Started by `migrateGangWithGangway`.
 *
 *   deno run --allow-ffi --allow-read --allow-write --allow-net --allow-run --allow-env
 *     src/lab/gang_side.ts --target-dir DIR --run-dir DIR [--target-netns NS]
 *     [--target-address ADDR] [--device-state-port PORT] [--max-bandwidth BYTES_PER_S]
 *     [--insecure] [--compression auto|zstd|none] QMP...
 *
 * Progress goes to stderr, one line each; the result ({@linkcode GangSideResult})
 * to stdout as one JSON line. The transport is TLS with a throwaway CA,
 * certificate and token made for the run (`LocalTarget`), or plain TCP with
 * `--insecure`. Temporary files go where TMPDIR says (the lab's run directory).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { migrateQemuGang, type MigrationTarget, type QemuGangReport } from "../gang_migration.ts";
import { QemuGuest } from "../qemu/guest.ts";
import { LocalTarget } from "../target/local_target.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { GangwayBreakdown } from "./measurement.ts";
import { exitOnSignal } from "./netns_signal.ts";
import { secondsBetween } from "./_time.ts";

/** What the gang runner prints on stdout when the gang runs at the target. */
export interface GangSideResult {
  /** Gangway's own report (rounds, bytes, downtimes, verification). */
  report: QemuGangReport;
  /** From the first RAM scanned (destinations waiting) to the last destination running. */
  tmtSeconds: number;
  /** Where the time went. */
  breakdown: GangwayBreakdown;
  /** The destinations, running, by QMP socket. */
  destinations: { name: string; qmpPath: string }[];
}

/** Options of {@linkcode runGangSide}. */
export interface GangSideOptions {
  /** QMP sockets of the running source guests. */
  sockets: string[];
  /** Directory of the destinations' RAM files. */
  targetDir: string;
  /** Directory of the destinations' QMP sockets and logs. */
  runDir: string;
  /** Network namespace of the target host, if any. */
  targetNetns?: string;
  /** The target's address. Default 127.0.0.1. */
  targetAddress?: string;
  /** First TCP port of QEMU's device state (one per guest); default unix sockets. */
  deviceStatePort?: number;
  /** Gangway's own bandwidth cap in bytes per second. */
  maxBandwidth?: number;
  /** Plain TCP instead of TLS (with a throwaway CA made for the run). Default false. */
  insecure?: boolean;
  /** Compression of page data: "auto" (the engine's default), "zstd" or "none". */
  compression?: CompressionMode;
  /** Progress lines. */
  say: (line: string) => void;
}

/** The steps of `migrateQemuGang` that bound the measurement. */
const SCAN_STEP = "Scanning and sending the gang's RAM";
const PAUSE_STEP = "Pausing the gang for the final round";
const SWITCH_STEP = "Switching over";

/**
 * Migrates running guests as a gang to a local target and times it.
 *
 * Requires `--allow-ffi`, `--allow-run`, `--allow-net`, `--allow-read`,
 * `--allow-write`, `--allow-env`.
 *
 * @param options Guests, target, cap, progress
 * @returns The result; the destinations run, detached
 * @throws Error when the gang cannot be moved (the sources then run again)
 */
export async function runGangSide(options: GangSideOptions): Promise<GangSideResult> {
  const sources: QemuGuest[] = [];
  for (const socket of options.sockets) sources.push(await QemuGuest.attach(socket));
  const netns = options.targetNetns;
  const target = await LocalTarget.start({
    dir: options.targetDir,
    runDir: options.runDir,
    commandPrefix: netns ? ["ip", "netns", "exec", netns] : undefined,
    address: options.targetAddress,
    deviceStatePort: options.deviceStatePort,
    insecure: options.insecure,
  });
  const started: QemuGuest[] = [];
  // Interrupted: end what this process started; the lab removes the files.
  using _signals = exitOnSignal(async () => {
    await Promise.allSettled(started.map((guest) => guest.kill()));
    await target.close();
  });
  const counted: MigrationTarget = {
    startDestination: async (source) => {
      const destination = await target.startDestination(source);
      started.push(destination.guest);
      return destination;
    },
    connect: () => target.connect(),
    token: target.token,
  };
  const t0 = performance.now();
  const at = new Map<string, number>();
  const roundEnds: number[] = [];
  try {
    const { report, destinations } = await migrateQemuGang(sources, counted, {
      maxBandwidth: options.maxBandwidth,
      compression: options.compression,
      onStep: (step) => {
        at.set(step, performance.now());
        options.say(step);
      },
      onRound: (round) => {
        roundEnds.push(performance.now());
        options.say(
          `round ${round.round}${round.final ? " (final)" : ""}: ${
            (round.bytesOnWire / 1e6).toFixed(1)
          } MB in ${round.seconds.toFixed(2)} s, ${round.pages.unique} unique pages, ` +
            `${round.pages.sentIdentical} as references`,
        );
      },
    });
    const end = Math.max(...destinations.map((d) => d.lastResumeAt ?? performance.now()));
    const scan = at.get(SCAN_STEP) ?? t0;
    const firstRound = report.transfer.rounds[0];
    const firstRoundStart = (roundEnds[0] ?? scan) - (firstRound?.seconds ?? 0) * 1000;
    const breakdown: GangwayBreakdown = {
      setupSeconds: secondsBetween(t0, scan),
      prepareSeconds: secondsBetween(scan, firstRoundStart),
      rounds: report.transfer.rounds.map((r) => ({
        round: r.round,
        final: r.final,
        seconds: r.seconds,
        bytesOnWire: r.bytesOnWire,
      })),
      pausedSeconds: secondsBetween(at.get(PAUSE_STEP) ?? scan, at.get(SWITCH_STEP) ?? end),
      switchOverSeconds: secondsBetween(at.get(SWITCH_STEP) ?? end, end),
    };
    const result: GangSideResult = {
      report,
      tmtSeconds: secondsBetween(scan, end),
      breakdown,
      destinations: destinations.map((d) => ({
        name: d.name,
        qmpPath: join(d.runDir, `${d.name}.qmp`),
      })),
    };
    for (const destination of destinations) await destination.detach();
    return result;
  } catch (error) {
    for (const source of sources) await source.detach().catch(() => {});
    throw error;
  } finally {
    await target.close();
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      "target-dir": { type: "string" },
      "run-dir": { type: "string" },
      "target-netns": { type: "string" },
      "target-address": { type: "string" },
      "device-state-port": { type: "string" },
      "max-bandwidth": { type: "string" },
      insecure: { type: "boolean" },
      compression: { type: "string" },
    },
  });
  const number = (text: string | undefined) => text === undefined ? undefined : Number(text);
  try {
    if (!values["target-dir"] || !values["run-dir"] || positionals.length === 0) {
      throw new Error(
        "Cannot run the gang side: --target-dir, --run-dir and QMP sockets are needed",
      );
    }
    const result = await runGangSide({
      sockets: positionals,
      targetDir: values["target-dir"],
      runDir: values["run-dir"],
      targetNetns: values["target-netns"],
      targetAddress: values["target-address"],
      deviceStatePort: number(values["device-state-port"]),
      maxBandwidth: number(values["max-bandwidth"]),
      insecure: values.insecure,
      compression: values.compression as CompressionMode | undefined,
      say: (line) => console.error(line),
    });
    console.log(JSON.stringify(result));
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
