/**
 * Gangway's side of the comparison: a target agent is started on the
 * target host, the booted gang is handed to a gang runner process on the
 * source host (`gang_side.ts`), which migrates it to the agent over the
 * lab link; the lab counts the link's bytes around it and reaches the
 * destinations on the target host to check them.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { QemuGuest } from "../qemu/guest.ts";
import type { BootedGang } from "./gang_spec.ts";
import type { GangSideResult } from "./gang_side.ts";
import type { CompressionMode } from "../transfer/compression_policy.ts";
import type { FinalRounds } from "../gang_migration.ts";
import type { ThrottleSteps } from "../plan/convergence.ts";
import type { MigrationOutcome } from "./measurement.ts";
import type { LabSession } from "./session.ts";
import { forEachLine } from "./_streams.ts";
import { agentRoot, agentSerialLog, startTargetAgent } from "./target_host.ts";
import type { SerialRecorder } from "./serial_recorder.ts";

const GANG_SIDE = fileURLToPath(new URL("./gang_side.ts", import.meta.url));
/**
 * What the gang runner may do: the page library, QEMU and the receiver, QMP, RAM files, and its
 * own CPU priority (cpu_share.ts).
 */
const GANG_SIDE_PERMISSIONS = [
  "--allow-ffi",
  "--allow-run",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=getPriority,setPriority",
];
/** With auto-converge it throttles the guests (cgroups): Deno asks for `--allow-all` for /proc and /sys. */
const THROTTLING_GANG_SIDE_PERMISSIONS = ["--allow-all"];

/** Where gangway's guests' disks are for host B: shared with it, or copied to it. */
export type DiskStorage = "shared" | "copy";

/** Options of {@linkcode runGangwayMethod}. */
export interface GangwayMethodOptions {
  /** The guests' disks: shared with host B (default), or copied to it. */
  storage?: DiskStorage;
  /**
   * Send over plain TCP, as QEMU's migration does, instead of gangway's
   * default TLS (a throwaway CA, certificate and token made for the run).
   * Default false.
   */
  insecure?: boolean;
  /**
   * Gangway's compression of page data: "auto" (its default: zstd while
   * the link is the bottleneck), "zstd" (always) or "none" (dedup alone).
   */
  compression?: CompressionMode;
  /** Follows each destination's serial log from its start (the application's view). */
  recorder?: SerialRecorder;
  /** How the gang ends: one final round for all ("gang", the default) or "per-guest". */
  finalRounds?: FinalRounds;
  /** Auto-converge's steps. Default: off. */
  throttle?: ThrottleSteps;
}

/** Events of the target agent quoted when the gang runner fails: its last ones... */
const KEPT_AGENT_EVENTS = 12;
/** ...and its first failures, with which peer was the source (later refusals can bury the cause). */
const KEPT_FIRST_FAILURES = 4;
/** Lines of the gang runner's stderr kept for an error message. */
const KEPT_LINES = 30;

/**
 * Migrates a booted gang with gangway: detaches from the sources, runs the
 * gang runner on the source host (its receiver and destinations on the
 * target host), and attaches to the destinations it leaves running.
 * Bytes on the link are the link counters' difference around the runner.
 *
 * Requires `--allow-run`, `--allow-net`, `--allow-read`, `--allow-write`
 * (the runner itself gets `--allow-ffi` and `--allow-env` too); with network
 * namespaces `--allow-all`, as the destinations' QMP sockets are reached
 * through `/proc/PID/root`, where Deno asks for it.
 *
 * @param session The lab session
 * @param gang The booted gang; the sources are gone afterwards
 * @param options Transport and compression
 * @returns What the migration did; the destinations run, tracked by the session
 * @throws Error with the runner's last words when it fails
 *
 * @example
 * ```ts
 * import { runGangwayMethod } from "./gangway_method.ts";
 * import { DEFAULT_LAB_CONFIG } from "./experiment.ts";
 * import { bootGang } from "./gang_spec.ts";
 * import { LabSession } from "./session.ts";
 *
 * await using lab = await LabSession.open();
 * const gang = await bootGang(lab, DEFAULT_LAB_CONFIG, "g");
 * const outcome = await runGangwayMethod(lab, gang);
 * console.log(outcome.bytesOnWire, outcome.tmtSeconds);
 * ```
 */
export async function runGangwayMethod(
  session: LabSession,
  gang: BootedGang,
  options: GangwayMethodOptions = {},
): Promise<MigrationOutcome> {
  const net = session.network;
  const sockets = gang.guests.map((guest) => `${guest.runDir}/${guest.name}.qmp`);
  const sourceLogs = new Map(gang.guests.map((guest) => [guest.name, guest]));
  // QMP serves one client: let go so the runner can attach (the session still knows the pids).
  for (const guest of gang.guests) await guest.detach();
  const copyStorage = options.storage === "copy";
  const agent = await startTargetAgent(session, { insecure: options.insecure, copyStorage });
  const credentials = agent.credentials;
  const foreseenLogs = new Map(gang.guests.map((g) => [g.name, agentSerialLog(session, g.name)]));
  for (const [name, log] of foreseenLogs) {
    options.recorder?.follow(name, agentRoot(session, agent) + log);
  }
  const args = [
    "run",
    ...(options.throttle ? THROTTLING_GANG_SIDE_PERMISSIONS : GANG_SIDE_PERMISSIONS),
    GANG_SIDE,
    "--target",
    `${agent.address.hostname}:${agent.address.port}`,
    ...(credentials
      ? ["--ca", credentials.caFile, "--token-file", credentials.tokenFile]
      : ["--insecure"]),
    ...(session.loopbackCap ? ["--max-bandwidth", String(session.loopbackCap)] : []),
    ...(options.compression ? ["--compression", options.compression] : []),
    ...(copyStorage ? ["--copy-storage"] : []),
    ...(options.finalRounds ? ["--final-rounds", options.finalRounds] : []),
    ...(options.throttle ? ["--throttle", JSON.stringify(options.throttle)] : []),
    ...sockets,
  ];
  const before = await net.bytes();
  const child = session.trackChild(
    net.spawn("source", Deno.execPath(), args, {
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // Its temporary files (the run's TLS material) go into the lab's run directory.
      env: { TMPDIR: session.runDir },
    }),
  );
  const kept: string[] = [];
  const [stdout, , status] = await Promise.all([
    new Response(child.stdout).text(),
    forEachLine(child.stderr, (line) => {
      kept.push(line);
      if (kept.length > KEPT_LINES) kept.shift();
      if (showLine(line)) session.say(`  ${line}`);
    }),
    child.status,
  ]);
  const after = await net.bytes();
  if (!status.success) {
    // What the target host saw is the other half of the story.
    const events = agent.server.events;
    const quote = (list: readonly unknown[]) => list.map((e) => JSON.stringify(e)).join("\n");
    const first = [
      ...events.filter((e) => e.event === "source").slice(0, 1),
      ...events.filter((e) => /failed$/.test(e.event)).slice(0, KEPT_FIRST_FAILURES),
    ];
    throw new Error(
      `Cannot migrate the gang with gangway: the gang runner exited with code ${status.code}:\n` +
        kept.join("\n") + `\nthe target agent's source and first failures:\n${quote(first)}` +
        `\nthe target agent's last events:\n${quote(events.slice(-KEPT_AGENT_EVENTS))}`,
    );
  }
  const result = JSON.parse(stdout.trim().split("\n").at(-1)!) as GangSideResult;
  const moved = [];
  for (const { name, qmpPath, pid, serialLog } of result.destinations) {
    // The lab, operator of both hosts, reaches host B's files through its processes.
    const root = net.target.namespace !== null ? `/proc/${pid}/root` : "";
    const destination = session.track(await QemuGuest.attach(root + qmpPath, { root }));
    moved.push({ source: sourceLogs.get(name)!, destination });
    if (options.recorder && serialLog !== foreseenLogs.get(name)) {
      // Followed late: the lines already there get a late time.
      session.say(`  ${name}'s serial log is not where the lab foresaw it: ${serialLog}`);
      options.recorder.follow(name, destination.serialLog);
    }
  }
  const { report } = result;
  const deviceStateBytes = report.guests.reduce((sum, g) => sum + g.deviceStateBytes, 0);
  return {
    bytesOnWire: after.sourceToTarget - before.sourceToTarget,
    bytesBack: after.targetToSource - before.targetToSource,
    toolBytes: report.transfer.bytesOnWire + deviceStateBytes,
    tmtSeconds: result.tmtSeconds,
    downtimeMs: report.guests.map((g) => g.downtimeMs),
    moved,
    window: result.window,
    gangway: {
      transport: options.insecure ? "tcp" : "tls",
      compression: report.transfer.compression,
      rounds: report.transfer.rounds.length,
      verified: report.transfer.verified,
      ...(report.transfer.liveRoundsEnded && { liveRoundsEnded: report.transfer.liveRoundsEnded }),
      breakdown: result.breakdown,
    },
  };
}

/** The runner's own progress is shown; the receiver's echo of it and its TLS warning are not. */
function showLine(line: string): boolean {
  if (line.startsWith("warning: --insecure")) return false;
  return !line.startsWith("receive: ") || line.includes("failed");
}
