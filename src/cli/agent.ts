/**
 * `deno task agent -- --listen HOST:PORT --dir DIR (--cert FILE --key FILE
 * --token-file FILE | --insecure [--token-file FILE]) [--images DIR]
 * [--run-dir DIR] [--max-guests N] [--max-memory SIZE] [--qemu-binary PATH]
 * [--accelerators tcg,kvm] [--shared-disks DIR,...] [--disk-dir DIR] [--json]
 * [--handshake-timeout SECONDS] [--idle-timeout SECONDS] [--keep-priority]`
 *
 * The target agent: the long-lived server of a host that gangs are
 * evacuated to (docs/agent.md). It serves one gang at a time on its one
 * port: starts the destination QEMUs from checked machine descriptions,
 * writes their RAM to DIR/<guest-name> (DIR is locked: one agent per
 * directory), carries their device state, and starts them. Its
 * directories are its own: missing ones are made with mode 0700, and one
 * that another user owns or may write is refused (src/target/agent_dirs.ts). Guests that
 * moved here keep running after their gang, and after the agent exits.
 * Logs one line per event on stderr (with --json, one JSON object per
 * event on stdout). SIGINT or SIGTERM stop it; a gang under way is then
 * abandoned: its sources run on. As root it receives a gang with the CPU
 * weight QEMU's incoming multifd migrations would have (src/cpu_share.ts),
 * until the gang ends, unless --keep-priority; its guests run at the usual
 * one.
 *
 * Requires `--allow-all` (QEMU, the page library, files under /dev/shm and /run).
 *
 * @module
 */
import { lockDirectory } from "../native/dir_lock.ts";
import { listenForSenders } from "../transport/listen_for_senders.ts";
import { type AgentEvent, serveAgent } from "../target/agent.ts";
import { checkAgentDirs } from "../target/agent_dirs.ts";
import { parseCli, runMain, UsageError } from "./_cli.ts";
import { checkQemuBinary, parseAccelerators } from "./_agent_flags.ts";
import { listenerTransport, SERVER_FLAGS, SERVER_PATHS } from "./_listener_transport.ts";
import { MAX_GUESTS } from "../transfer/receiver_options.ts";
import { parseAddress, parseCount, parseDuration, parseSize } from "./_units.ts";

const USAGE = "usage: deno task agent -- --listen HOST:PORT --dir DIR " +
  "(--cert FILE --key FILE --token-file FILE | --insecure [--token-file FILE]) " +
  "[--images DIR] [--run-dir DIR] [--max-guests N] [--max-memory SIZE] [--qemu-binary PATH] " +
  "[--accelerators tcg,kvm] [--shared-disks DIR,...] [--disk-dir DIR] [--json] " +
  "[--handshake-timeout SECONDS] [--idle-timeout SECONDS] [--keep-priority]";

/** Where the agent keeps its own files unless told otherwise. */
const DEFAULT_RUN_DIR = "/run/gangway-agent";

function describe(e: AgentEvent): string {
  const { event, ...rest } = e;
  const peer = typeof rest.peer === "string" ? `${rest.peer}: ` : "";
  delete rest.peer;
  const details = Object.entries(rest).map(([k, v]) =>
    `${k} ${typeof v === "string" ? v : JSON.stringify(v)}`
  );
  return `${peer}${event}${details.length > 0 ? `: ${details.join(", ")}` : ""}`;
}

async function main(args: string[]): Promise<void> {
  const { values } = parseCli(args, {
    ...SERVER_FLAGS,
    images: { type: "string" },
    "run-dir": { type: "string" },
    "max-guests": { type: "string" },
    "max-memory": { type: "string" },
    "qemu-binary": { type: "string" },
    accelerators: { type: "string" },
    "shared-disks": { type: "string" },
    "disk-dir": { type: "string" },
    json: { type: "boolean" },
    "handshake-timeout": { type: "string" },
    "idle-timeout": { type: "string" },
    "keep-priority": { type: "boolean" },
  }, { options: [...SERVER_PATHS, "images", "run-dir", "disk-dir"] });
  if (!values.listen) throw new UsageError("--listen is required");
  if (!values.dir) throw new UsageError("--dir is required");
  const address = parseAddress(values.listen, "--listen", true);
  const millis = (flag: "handshake-timeout" | "idle-timeout", fallback: number) =>
    values[flag] ? parseDuration(values[flag], `--${flag}`) : fallback;
  const maxMemoryMiB = values["max-memory"]
    ? Math.floor(parseSize(values["max-memory"], "--max-memory") / 2 ** 20)
    : Math.floor(Deno.systemMemoryInfo().total / 2 ** 20);
  if (maxMemoryMiB < 1) {
    throw new UsageError(
      `--max-memory must be at least 1M (guests take whole MiB), got "${values["max-memory"]}"`,
    );
  }
  // Every flag is checked before anything is made: a bad one leaves no directory behind.
  const maxGuests = values["max-guests"]
    ? parseCount(values["max-guests"], "--max-guests", MAX_GUESTS)
    : 64;
  const handshakeTimeoutMs = millis("handshake-timeout", 10_000);
  const idleTimeoutMs = millis("idle-timeout", 60_000);
  const transport = await listenerTransport(values, values.listen, "agent");
  const log = (event: AgentEvent) => {
    if (values.json) console.log(JSON.stringify(event));
    console.error(`agent: ${describe(event)}`);
  };
  const qemuBinary = values["qemu-binary"] ?? "qemu-system-x86_64";
  // The default is looked for only when the first gang starts: a host may set up QEMU later.
  if (values["qemu-binary"] !== undefined) checkQemuBinary(qemuBinary);
  const accelerators = values.accelerators === undefined
    ? undefined
    : parseAccelerators(values.accelerators);
  // Listening first: a port in use leaves no directory behind.
  const listener = listenForSenders(address, transport.listen);
  // Checked before anything is written there: another user's directory is refused. And each
  // shared-disk directory must exist (an empty entry would be every path), by its real path.
  const dirs = checkAgentDirs({
    dir: values.dir,
    runDir: values["run-dir"] ?? DEFAULT_RUN_DIR,
    diskDir: values["disk-dir"],
    imagesDir: values.images,
    sharedDisks: values["shared-disks"]?.split(","), // absolute only: a relative entry is refused
  });
  using _lock = lockDirectory(dirs.dir);
  // Its run directory too: a second agent's clean-up there would take this one's destinations.
  using _runLock = dirs.runDir === dirs.dir ? undefined : lockDirectory(dirs.runDir);
  const stop = new AbortController();
  Deno.addSignalListener("SIGINT", () => stop.abort());
  Deno.addSignalListener("SIGTERM", () => stop.abort());
  await serveAgent(listener, {
    ...dirs,
    token: transport.token,
    maxGuests,
    maxMemoryMiB,
    qemuBinary,
    accelerators,
    handshakeTimeoutMs,
    idleTimeoutMs,
    keepPriority: values["keep-priority"],
    signal: stop.signal,
    log,
  });
  Deno.exit(0);
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
