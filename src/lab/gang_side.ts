/**
 * The gangway side of a lab run, as its own process on the lab's source
 * host: one Deno process cannot be in two network namespaces, and
 * gangway's sender must send over the lab link. It attaches to the running
 * source guests by their QMP sockets, connects to the target agent on the
 * target host, migrates the gang with `migrateQemuGang`, times it, and
 * leaves the destinations running at the target for the lab to check.
 * Started by `runGangwayMethod`.
 *
 *   deno run --allow-ffi --allow-read --allow-write --allow-net --allow-run --allow-env
 *     src/lab/gang_side.ts --target HOST:PORT (--ca FILE --token-file FILE | --insecure)
 *     [--max-bandwidth BYTES_PER_S] [--compression auto|zstd|none] [--final-rounds gang|per-guest]
 *     [--throttle '{"max":0.99,"initial":0.2,"step":0.1}']
 *     [--copy-storage] QMP...
 *
 * Progress goes to stderr, one line each; the result ({@linkcode GangSideResult})
 * to stdout as one JSON line.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type FinalRounds, migrateQemuGang, type QemuGangReport } from "../gang_migration.ts";
import { QemuGuest } from "../qemu/guest.ts";
import { RemoteTarget } from "../target/remote_target.ts";
import type { KeptGuest } from "../target/kept_guests.ts";
import type { TargetAddress } from "../transport/connect_target.ts";
import { readPemFile, readTokenFile } from "../transport/credentials.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { GangwayBreakdown } from "./measurement.ts";
import { exitOnSignal } from "./netns_signal.ts";
import { errorMessage } from "../_errors.ts";
import { wallClockMs } from "./_time.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";
import { mountCpuCgroupIfHidden } from "./netns_cgroups.ts";
import { claimCpuShare } from "../cpu_share.ts";

/** What the gang runner prints on stdout when the gang runs at the target. */
export interface GangSideResult {
  /** Gangway's own report (rounds, bytes, downtimes, verification). */
  report: QemuGangReport;
  /** From the first RAM scanned (destinations waiting) to the last destination running. */
  tmtSeconds: number;
  /** Where the time went. */
  breakdown: GangwayBreakdown;
  /** The destinations, running at the target, as the agent reports them. */
  destinations: KeptGuest[];
  /** The TMT's start and end on the wall clock the lab shares (ms since the epoch). */
  window: { startMs: number; endMs: number };
}

/** Options of {@linkcode runGangSide}. */
export interface GangSideOptions {
  /** QMP sockets of the running source guests. */
  sockets: string[];
  /** The target agent. */
  target: TargetAddress;
  /** The agent's CA (PEM text) and token; none with `insecure`. */
  ca?: string;
  token?: string;
  /** Plain TCP instead of TLS. Default false. */
  insecure?: boolean;
  /** Gangway's own bandwidth cap in bytes per second. */
  maxBandwidth?: number;
  /** Compression of page data: "auto" (the engine's default), "zstd" or "none". */
  compression?: CompressionMode;
  /** Copy the guests' disks to the target (no shared storage). Default false. */
  copyStorage?: boolean;
  /** How the gang ends: "gang" (the engine's default) or "per-guest". */
  finalRounds?: FinalRounds;
  /** Auto-converge's steps. Default: off. */
  throttle?: ThrottleSteps;
  /** Progress lines. */
  say: (line: string) => void;
}

/**
 * Migrates running guests as a gang to the target agent and times it.
 *
 * Requires `--allow-ffi`, `--allow-run`, `--allow-net`, `--allow-read`,
 * `--allow-write`, `--allow-env`.
 *
 * @param options Guests, target, cap, progress
 * @returns The result; the destinations run at the target
 * @throws Error when the gang cannot be moved (the sources then run again)
 */
export async function runGangSide(options: GangSideOptions): Promise<GangSideResult> {
  const sources: QemuGuest[] = [];
  for (const socket of options.sockets) sources.push(await QemuGuest.attach(socket));
  const target = await RemoteTarget.connect(
    options.target,
    {
      ...options.insecure ? { insecure: true } : { ca: options.ca, token: options.token },
      copyDisks: options.copyStorage,
    },
  );
  // Interrupted: closing the control connection makes the agent stop what it started. The lab,
  // this runner's parent, tells the user (the runner's stderr is relayed as its progress).
  using _signals = exitOnSignal(() => target.close(), { announce: false });
  const roundEnds: number[] = [];
  try {
    const t0 = performance.now();
    const t0Ms = wallClockMs();
    const { report } = await migrateQemuGang(sources, target, {
      maxBandwidth: options.maxBandwidth,
      compression: options.compression,
      finalRounds: options.finalRounds,
      ...(options.throttle ? { throttle: options.throttle } : {}),
      onStep: (step) => options.say(step),
      onRound: (round) => {
        roundEnds.push((performance.now() - t0) / 1000);
        options.say(
          `round ${round.round}${round.final ? " (final)" : ""}: ${
            (round.bytesOnWire / 1e6).toFixed(1)
          } MB in ${round.seconds.toFixed(2)} s, ${round.pages.unique} unique pages, ` +
            `${round.pages.sentIdentical} as references` +
            (round.throttle ? `, guests throttled ${Math.round(round.throttle * 100)}%` : "") +
            (round.changedAfter === undefined
              ? ""
              : `; then about ${round.changedAfter.pages} pages changed (sampled in ${
                (round.changedAfter.seconds * 1000).toFixed(0)
              } ms)`),
        );
      },
    });
    const { timeline } = report;
    const firstRound = report.transfer.rounds[0];
    const firstRoundStart = (roundEnds[0] ?? timeline.transfer) - (firstRound?.seconds ?? 0) -
      (firstRound?.changedAfter?.seconds ?? 0);
    const breakdown: GangwayBreakdown = {
      setupSeconds: timeline.transfer,
      handshakeSeconds: Math.max(0, firstRoundStart - timeline.transfer),
      rounds: report.transfer.rounds.map((r) => ({
        round: r.round,
        final: r.final,
        seconds: r.seconds,
        bytesOnWire: r.bytesOnWire,
        time: r.time,
        ...(r.guest === undefined ? {} : { guest: r.guest }),
        ...(r.caughtUp === undefined ? {} : { caughtUp: r.caughtUp }),
        ...(r.throttle ? { throttle: r.throttle } : {}),
      })),
      pausedSeconds: timeline.switchOver - timeline.paused,
      pausingSeconds: timeline.finalRound - timeline.paused,
      verifySeconds: report.transfer.verifySeconds,
      switchOverSeconds: timeline.running - timeline.switchOver,
      downtimeParts: report.guests.map((g) => g.downtimeParts),
    };
    const names = new Set(report.guests.map((g) => g.name));
    return {
      report,
      tmtSeconds: timeline.running - timeline.transfer,
      breakdown,
      destinations: (await target.keptGuests()).filter((g) => names.has(g.name)),
      window: {
        startMs: t0Ms + timeline.transfer * 1000,
        endMs: t0Ms + timeline.running * 1000,
      },
    };
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
      target: { type: "string" },
      ca: { type: "string" },
      "token-file": { type: "string" },
      "max-bandwidth": { type: "string" },
      insecure: { type: "boolean" },
      compression: { type: "string" },
      "copy-storage": { type: "boolean" },
      "final-rounds": { type: "string" },
      throttle: { type: "string" },
    },
  });
  const number = (text: string | undefined) => text === undefined ? undefined : Number(text);
  try {
    const [hostname, port] = (values.target ?? "").split(":");
    if (!hostname || !port || positionals.length === 0) {
      throw new Error("Cannot run the gang side: --target HOST:PORT and QMP sockets are needed");
    }
    // As evacuate.ts does: the weight QEMU's multifd threads would have (the agent on host B
    // claims the same for its receiver).
    claimCpuShare(positionals.length);
    const throttle = values.throttle === undefined
      ? undefined
      : JSON.parse(values.throttle) as ThrottleSteps;
    if (throttle) await mountCpuCgroupIfHidden();
    const result = await runGangSide({
      sockets: positionals,
      target: { hostname, port: Number(port) },
      ca: values.ca ? await readPemFile(values.ca, "CA certificate") : undefined,
      token: values["token-file"] ? await readTokenFile(values["token-file"]) : undefined,
      insecure: values.insecure,
      maxBandwidth: number(values["max-bandwidth"]),
      compression: values.compression as CompressionMode | undefined,
      copyStorage: values["copy-storage"],
      finalRounds: values["final-rounds"] as FinalRounds | undefined,
      throttle,
      say: (line) => console.error(line),
    });
    console.log(JSON.stringify(result));
  } catch (error) {
    console.error(`error: ${errorMessage(error)}`);
    Deno.exit(1);
  }
}
