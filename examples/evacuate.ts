/**
 * Evacuate this host: live-migrate a gang of QEMU guests to the target
 * agent of another host, all at once, sending each distinct page content
 * once for the whole gang.
 *
 *   deno run -A examples/evacuate.ts --target HOST:PORT
 *     (--ca FILE --token-file FILE | --insecure [--token-file FILE])
 *     [--server-name NAME] [--max-bandwidth BYTES_PER_S] [--copy-storage] [--keep-priority]
 *     [--final-rounds per-guest|gang] [--max-downtime MS] [--dry-run] [--json]
 *     [--max-throttle PERCENT [--throttle-initial PERCENT] [--throttle-step PERCENT]]
 *     (--all | QMP_SOCKET...)
 *
 * The guests are named by their QMP sockets, or `--all` takes every QEMU
 * of this host that gangway can migrate (started by gangway, or by hand
 * after docs/qemu.md); with neither, it lists them and exits 2. The target
 * host runs `deno task agent` (docs/agent.md); the guests keep running
 * there after this script exits. Disks are on storage both hosts see,
 * unless `--copy-storage`: then the agent makes each disk afresh over the
 * same base image (found by hash, or sent once) and each guest's overlay is
 * mirrored into it while the RAM moves (docs/agent.md). The guests are
 * paused and switched over one at a time while the others run on, so each
 * guest's downtime holds only its own last pages (`--final-rounds gang`:
 * all at once, and all or none moves; copied disks always end that way).
 * If a later guest fails, the ones before it stay at the target and the
 * error names both groups. `--dry-run` prints the plan, has the agent
 * check it as it would take it (exit status 1 if it would refuse), and
 * changes nothing. Progress goes to stderr; with `--json` the report goes to
 * stdout (after a failure before any switch-over: `{ error, moved: [],
 * stayed: [names], lost: [names whose QEMU exited] }`; after one during the
 * switch-overs, the report with those four fields; `--dry-run --json`: the
 * plan, `{ dryRun, target, guests, agent: { ok, ... } }`, or `{ dryRun,
 * target, error }` when it cannot be made). A guest paused here moves paused and stays so. Exit status 0
 * only when every guest runs at the target (or sits there paused, as it was here). Ctrl-C
 * (SIGINT), SIGTERM or SIGHUP stop the migration as a lost target would:
 * every guest not yet handed to its switch-over runs here again (those the
 * migration paused included; one paused before it stays paused), and the exit status is 128 + the signal (a second signal
 * exits at once; SIGKILL leaves a paused guest paused). As root
 * it raises its own CPU priority to the weight QEMU's multifd threads for
 * the gang would have (src/cpu_share.ts), so that a busy host does not
 * starve it; `--keep-priority` leaves it as it is. With `--max-throttle`
 * (root), guests that write pages faster than the rounds send them are
 * slowed down while the rounds stop shrinking, at most that percent of
 * the CPU time they used (auto-converge, as QEMU's `max-cpu-throttle`), by
 * QEMU's steps (20%, then 10% more each time the rounds stall again; the
 * two other flags change them), each at full speed again once paused for
 * its final round. With `--max-downtime MS`, a guest (or with
 * `--final-rounds gang` the gang) whose final round would keep it paused
 * longer, by an estimate made just before its pause (its changed pages,
 * whole, at the link's measured rate or `--max-bandwidth`, the lower), is
 * not paused: the migration fails,
 * and the guests not moved run on here (by default there is no limit, and
 * rounds that stall end in a long final round).
 *
 * Permissions: --allow-ffi (the page library), --allow-run (ps, cat),
 * --allow-net (QMP, the agent), --allow-read and --allow-write (RAM
 * files, the device-state relays' sockets), --allow-env, and
 * --allow-sys=getPriority,setPriority (the CPU priority: without it the
 * priority is quietly left as it is). `-A` grants them all; --allow-ffi
 * and --allow-run are full access anyway.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { migrateQemuGang, SwitchOverError } from "../src/gang_migration.ts";
import { findQemus, QemuGuest } from "../src/qemu/mod.ts";
import { describeMachine, isCopied, RemoteTarget } from "../src/target/mod.ts";
import { readPemFile, readTokenFile } from "../src/transport/mod.ts";
import { claimCpuShare } from "../src/cpu_share.ts";
import { parseAddress, parseCount, parseRate, parseThrottleFlags } from "../src/cli/_units.ts";
import { stopOnSignals } from "../src/cli/_cli.ts";

const USAGE = "usage: deno run -A examples/evacuate.ts --target HOST:PORT " +
  "(--ca FILE --token-file FILE | --insecure [--token-file FILE]) [--server-name NAME] [--max-bandwidth B] " +
  "[--copy-storage] [--keep-priority] [--final-rounds per-guest|gang] [--max-downtime MS] " +
  "[--dry-run] [--json] " +
  "[--max-throttle PERCENT [--throttle-initial PERCENT] [--throttle-step PERCENT]] " +
  "(--all | QMP_SOCKET...)";
const say = (text: string) => console.error(`evacuate: ${text}`);
/** With `--json`, what a failure before any switch-over prints on stdout (set once parsed). */
let failureJson: ((error: string) => string) | undefined;
const fail = (text: string, code = 1): never => {
  say(text);
  // Once the arguments parsed, a script asking for JSON gets it with every failure, a guest it
  // named that cannot be attached (exit 2) included: nothing moved.
  if (failureJson) console.log(failureJson(text));
  Deno.exit(code);
};

/** The arguments, or a one-line usage error (exit 2) before anything else is touched. */
function parseArguments() {
  try {
    return parseArgs({
      args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
      allowPositionals: true,
      options: {
        target: { type: "string" },
        ca: { type: "string" },
        "token-file": { type: "string" },
        "server-name": { type: "string" },
        insecure: { type: "boolean" },
        "max-bandwidth": { type: "string" },
        "copy-storage": { type: "boolean" },
        "keep-priority": { type: "boolean" },
        "final-rounds": { type: "string" },
        "max-downtime": { type: "string" },
        "max-throttle": { type: "string" },
        "throttle-initial": { type: "string" },
        "throttle-step": { type: "string" },
        "dry-run": { type: "boolean" },
        json: { type: "boolean" },
        all: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    return fail(`${error instanceof Error ? error.message : error}\n${USAGE}`, 2);
  }
}
const { values, positionals } = parseArguments();
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
/** A value read by the command-line tools' own parsers: a mistake ends the script with exit code 2. */
const flag = <T>(parse: () => T): T => {
  try {
    return parse();
  } catch (error) {
    return fail(`${error instanceof Error ? error.message : error}\n${USAGE}`, 2);
  }
};

// Step 1 -- every argument checked and the credentials read, before any guest is touched.
if (positionals.length > 0 && values.all) fail(`QMP sockets or --all, not both\n${USAGE}`, 2);
// Absolute: QEMU is found by the socket its command line names (docs/qemu.md's recipe: absolute).
const named = positionals.map((socket) => resolve(socket));
const twice = named.find((socket, i) => named.indexOf(socket) !== i);
if (twice !== undefined) fail(`the QMP socket "${twice}" is named twice\n${USAGE}`, 2);
const listOnly = positionals.length === 0 && !values.all;
if (!listOnly && !values.target) fail(`--target HOST:PORT is required\n${USAGE}`, 2);
// As `send` takes them: HOST:PORT ([v6]:PORT), and a rate such as 125M (bytes per second).
const target = listOnly ? undefined : flag(() => parseAddress(values.target!, "--target"));
const finalRounds = values["final-rounds"] as "per-guest" | "gang" | undefined;
if (finalRounds !== undefined && finalRounds !== "per-guest" && finalRounds !== "gang") {
  fail(`--final-rounds must be per-guest or gang, got "${finalRounds}"\n${USAGE}`, 2);
}
const { throttle } = flag(() => parseThrottleFlags(values));
const maxDowntimeMs = values["max-downtime"] === undefined
  ? undefined
  : flag(() => parseCount(values["max-downtime"]!, "--max-downtime"));
const maxBandwidth = values["max-bandwidth"] === undefined
  ? undefined
  : flag(() => parseRate(values["max-bandwidth"]!, "--max-bandwidth"));
if (!listOnly && !values.insecure && (!values.ca || !values["token-file"])) {
  fail(`--ca and --token-file are needed for TLS, or --insecure\n${USAGE}`, 2);
}
const credentials = async () => {
  try {
    const ca = values.insecure ? undefined : await readPemFile(values.ca!, "CA certificate");
    // Plain TCP still presents a token when given one: an agent may run --insecure --token-file.
    const token = values["token-file"] ? await readTokenFile(values["token-file"]) : undefined;
    return ca === undefined ? { insecure: true as const, token } : { ca, token };
  } catch (error) {
    return fail(error instanceof Error ? error.message : String(error), 2);
  }
};
const security = listOnly ? undefined : await credentials();

// Step 2 -- the gang: the guests named, or with --all every guest gangway can move.
const found = await findQemus();
// A QEMU of another mount namespace (a container, a service with a private /tmp, the other host
// of a simulated pair) names paths that are not this host's: its QMP socket is not ours to open.
const usable = found.usable.filter((q) => !q.otherMountNamespace);
const unusable = [
  ...found.unusable,
  ...found.usable.filter((q) => q.otherMountNamespace).map((q) => ({
    pid: q.pid,
    reason: `guest "${q.commandLine.instance.name}" runs in another mount namespace ` +
      `(a container, or another host's): its QMP socket ${q.commandLine.instance.qmpPath} ` +
      `is not this host's path`,
  })),
];
const candidates = usable.map((q) => q.commandLine.instance.qmpPath);
if (listOnly) {
  console.error(USAGE);
  say(`${candidates.length} guests here could move (name them, or pass --all):`);
  for (const q of usable) {
    say(`  ${q.commandLine.instance.name}  ${q.commandLine.instance.qmpPath}`);
  }
  for (const q of unusable) say(`  cannot move pid ${q.pid}: ${q.reason}`);
  Deno.exit(2);
}

const sources: QemuGuest[] = [];
const detachAll = () => Promise.all(sources.map((s) => s.detach().catch(() => {})));
/**
 * Nothing moved: the guests whose QEMU still runs stayed as they were, the others were lost (read
 * while the guests are attached: a detached guest's QEMU reads as exited).
 */
const lostHere = () => sources.filter((s) => !s.alive).map((s) => s.name);
const nothingMoved = (error: string, lost = lostHere()) =>
  JSON.stringify({
    error,
    moved: [],
    stayed: sources.map((s) => s.name).filter((name) => !lost.includes(name)),
    lost,
  });
if (values.json) {
  // A dry run moves nothing: its failures have its own shape, as its plan has. Before the
  // migration starts every guest stays (the guests are detached by then: none reads as alive).
  failureJson = values["dry-run"]
    ? (error) => JSON.stringify({ dryRun: true, target: values.target, error })
    : (error) => nothingMoved(error, []);
}
for (const socket of named.length > 0 ? named : candidates) {
  try {
    const guest = await QemuGuest.attach(socket);
    // A destination still waiting for its migration is not a guest to move.
    if ((await guest.status()).status === "inmigrate") await guest.detach();
    else sources.push(guest);
  } catch (error) {
    await detachAll();
    fail(error instanceof Error ? error.message : String(error), 2);
  }
}
if (sources.length === 0) fail("no guest to evacuate", 2);

// Step 3 -- the target agent: TLS with its CA and the token, or plain TCP when insisted on.
const remote = await RemoteTarget.connect(target!, {
  ...security,
  serverName: values["server-name"],
  copyDisks: values["copy-storage"],
}).catch(async (error) => {
  await detachAll();
  return fail(error instanceof Error ? error.message : String(error));
});

if (values["dry-run"]) {
  say(`would move ${sources.length} guests to ${values.target}; the agent would start:`);
  const plan = [];
  for (const source of sources) {
    const [d, { status }] = await Promise.all([
      describeMachine(source.name, source.machine, { copyDisks: values["copy-storage"] }),
      source.status(),
    ]).catch(async (error) => {
      await Promise.all([remote.close(), detachAll()]);
      return fail(error instanceof Error ? error.message : String(error));
    });
    const disks = (d.disks ?? []).map((disk) =>
      isCopied(disk) ? `a copy over ${disk.base.name}` : `shared ${disk.path}`
    );
    say(
      `  ${d.name}: ${d.memoryMiB} MiB, ${d.cpus} vCPU, ${d.accelerator}` +
        (d.kernel ? `, kernel ${d.kernel.name}, initrd ${d.initrd!.name}` : "") +
        (disks.length > 0 ? `, disks: ${disks.join(", ")}` : "") +
        `, "${d.kernelArgs.join(" ")}"` +
        (status === "running"
          ? ""
          : `; it is ${status}${status === "paused" ? ": it moves paused" : ""}`),
    );
    plan.push({ name: d.name, status, memoryMiB: d.memoryMiB, cpus: d.cpus, disks });
  }
  // The agent checks them as it would take them (limits, names in use, accelerators, disks).
  const check = await remote.check(sources).then(
    ({ busy, missing }) => {
      if (busy) say("the agent is busy with another gang now: it would refuse until that ends");
      const mib = missing.reduce((sum, ref) => sum + ref.size, 0) / 2 ** 20;
      if (missing.length > 0) {
        say(`it lacks ${missing.length} files (${mib.toFixed(1)} MiB), which would be sent first`);
      }
      say(busy ? "otherwise the agent would take them" : "the agent would take them");
      return { ok: true, busy, missing: missing.map(({ name, size }) => ({ name, size })) };
    },
    (error) => {
      const message = error instanceof Error ? error.message : String(error);
      say(`the agent would refuse them: ${message}`);
      return { ok: false, error: message };
    },
  );
  if (values.json) {
    console.log(
      JSON.stringify({ dryRun: true, target: values.target, guests: plan, agent: check }),
    );
  }
  await remote.close();
  await detachAll();
  if (!check.ok) Deno.exitCode = 1;
  // Not Deno.exit(): the TLS connection to the agent is then cut without its close_notify, and
  // the agent logs a dry run as a failed connection ("the link was cut or the peer died").
} else {
  // Step 4 -- scan, live rounds, pause, final round, verify, switch over.
  if (!values["keep-priority"]) {
    const { nice, raised } = claimCpuShare(sources.length);
    if (raised) say(`CPU priority nice ${nice}: the weight of QEMU's multifd threads for the gang`);
  }
  say(
    `evacuating ${sources.length} guests to ${values.target}: ${
      sources.map((g) => g.name).join(", ")
    }`,
  );
  // Ctrl-C, kill, a closed terminal: the migration stops as on a lost target, and every guest
  // not yet handed to its switch-over runs here again (never left paused); again: exit at once.
  const interrupt = stopOnSignals((signal) =>
    say(
      `${signal}: stopping; the guests not switched over run here again (${signal} again: exit now)`,
    )
  );
  try {
    const { report, destinations } = await migrateQemuGang(sources, remote, {
      signal: interrupt.signal,
      maxBandwidth,
      finalRounds,
      maxDowntimeMs,
      ...(throttle ? { throttle } : {}),
      onStep: say,
      onRound: (r) =>
        say(
          `round ${r.round}${r.final ? " (final)" : ""}: ${
            (r.bytesOnWire / 2 ** 20).toFixed(1)
          } MiB, ` +
            `${r.pages.sentIdentical} pages as references` +
            (r.throttle ? `, guests throttled ${Math.round(r.throttle * 100)}%` : ""),
        ),
    });
    // Checked at the target, through the agent, after `cont`.
    const states = await Promise.all(destinations.map((d) => d.state().catch(() => undefined)));
    const guests = report.guests.map((guest, i) => ({
      ...guest,
      running: states[i]?.running === true,
      status: states[i]?.status ?? "unknown (the agent did not answer)",
    }));
    // A guest paused here before the migration moved paused, as QEMU's own migration moves it.
    const asItWas = (g: typeof guests[number]) => g.paused ? g.status === "paused" : g.running;
    for (const guest of guests) {
      const wanted = guest.paused ? "paused" : "running";
      say(
        `${guest.name}: ${asItWas(guest) ? wanted : `NOT ${wanted} (${guest.status})`} ` +
          "at the target" +
          (guest.paused
            ? ", as it was here (QMP `cont` runs it)"
            : `, downtime ${guest.downtimeMs.toFixed(0)} ms`),
      );
    }
    say(
      `moved ${(report.transfer.guestBytes / 2 ** 20).toFixed(0)} MiB of guest RAM with ` +
        `${(report.transfer.bytesOnWire / 2 ** 20).toFixed(1)} MiB on the wire in ${
          report.seconds.toFixed(1)
        } s`,
    );
    if (values.json) console.log(JSON.stringify({ ...report, guests }));
    if (interrupt.exitCode !== undefined) {
      say("the signal came after every guest had moved: nothing to stop");
    }
    if (!guests.every(asItWas)) Deno.exitCode = 1;
  } catch (error) {
    if (error instanceof SwitchOverError) {
      const { moved, stayed, lost } = error;
      say(
        `moved ${moved.length} of ${sources.length} guests (${moved.join(", ") || "none"}); ` +
          (stayed.length > 0 ? `${stayed.join(", ")} still here as before; ` : "") +
          (lost.length > 0 ? `${lost.join(", ")} exited here (lost); ` : "") +
          error.message,
      );
      if (values.json) {
        const report = error.result.report;
        console.log(JSON.stringify({ ...report, error: error.message, moved, stayed, lost }));
      }
    } else {
      const message = error instanceof Error ? error.message : String(error);
      // A guest whose QEMU exited is nowhere: it is not among those still here.
      const lost = lostHere();
      say(
        lost.length > 0
          ? `failed; ${
            lost.join(", ")
          } exited here (lost), the others are here as before: ${message}`
          : `failed, every guest is here as before (running or paused): ${message}`,
      );
      // A script reading the report learns it too: nothing moved.
      if (values.json) console.log(nothingMoved(message, lost));
    }
    Deno.exitCode = interrupt.exitCode ?? 1;
  } finally {
    interrupt[Symbol.dispose]();
    await detachAll();
    await remote.close();
  }
}
