/**
 * `deno task receive -- --listen HOST:PORT --dir DIR (--cert FILE --key FILE
 * --token-file FILE | --insecure [--token-file FILE]) [--once] [--json]
 * [--max-guest-bytes SIZE] [--max-guests N] [--max-gang-bytes SIZE]
 * [--handshake-timeout SECONDS] [--idle-timeout SECONDS]`
 *
 * The target side: receives gangs, one at a time, writing each guest's RAM
 * to DIR/<guest-name> (DIR is locked: one receiver per directory; it must
 * be this user's, writable by no one else, and is made with mode 0700 when
 * missing). Logs
 * one line per event on stderr (with --json, one JSON object per event on
 * stdout). With --once it exits after the first gang received and verified.
 *
 * Ctrl-C (SIGINT) or SIGTERM stops it: at once when no gang is in
 * progress; else it accepts no more senders and exits once the gang has
 * ended, and a second signal abandons the gang (its files undone, the
 * sender told) and exits with code 1. A receiver killed mid-gang (kill -9)
 * leaves a journal of the gang's files in DIR, and the next receiver of
 * DIR removes them at start-up.
 *
 * Transfers are TLS with the receiver's certificate and key, and a sender
 * must show the token kept in `--token-file` before anything else is read.
 * Plain TCP needs `--insecure` (on both sides) and prints a warning.
 * Without either, `receive` refuses to start (exit code 2).
 *
 * Requires `--allow-ffi`, `--allow-read` (certificate, key and token
 * files), `--allow-write` (DIR), `--allow-net` (the listening address),
 * `--allow-env=GANGWAY_LIB` (`,INIT_CWD` too for relative paths from where
 * `deno task` ran) and `--allow-sys=uid` (DIR's owner is checked).
 *
 * @module
 */
import { lockDirectory } from "../native/dir_lock.ts";
import { ownPrivateDir } from "../_private_dirs.ts";
import { type ReceiverEvent, serveGangs } from "../transfer/receiver.ts";
import { MAX_GUESTS } from "../transfer/receiver_options.ts";
import { listenForSenders } from "../transport/listen_for_senders.ts";
import { parseCli, runMain, UsageError } from "./_cli.ts";
import { listenerTransport, SERVER_FLAGS, SERVER_PATHS } from "./_listener_transport.ts";
import { parseAddress, parseCount, parseDuration, parseSize } from "./_units.ts";

const USAGE = "usage: deno task receive -- --listen HOST:PORT --dir DIR " +
  "(--cert FILE --key FILE --token-file FILE | --insecure [--token-file FILE]) " +
  "[--once] [--json] [--max-guest-bytes SIZE] [--max-guests N] [--max-gang-bytes SIZE] " +
  "[--handshake-timeout SECONDS] [--idle-timeout SECONDS]";

/** What `receive` logs: the receiver's events, and its own on a signal. */
type ReceiveEvent = ReceiverEvent | { event: "stopping"; peer: string; abandon: boolean };

function describe(e: ReceiveEvent): string {
  switch (e.event) {
    case "listening":
      return `listening on ${e.address}`;
    case "recovered":
      return `recovered: undid the files of the gang an earlier receiver was receiving when ` +
        `it was killed (removed the ones it made, emptied the ones that were there): ` +
        e.guests.join(", ");
    case "accepted":
      return `${e.peer}: receiving ${e.guests.length} guest${e.guests.length === 1 ? "" : "s"} (${
        e.guests.map((g) => g.name).join(", ")
      })`;
    case "stopping":
      return e.abandon
        ? `abandoning the gang from ${e.peer}`
        : `stopping after the gang from ${e.peer} (Ctrl-C again to abandon it)`;
    case "round":
      return `${e.peer}: round ${e.round}${e.final ? " (final)" : ""} applied`;
    case "guest-verified":
      return `${e.peer}: guest "${e.guest}" finished alone, its digest matched`;
    case "complete":
      return `${e.peer}: complete, every digest matched: ${e.guests.map((g) => g.path).join(", ")}`;
    case "failed":
      return `${e.peer}: failed: ${e.error}`;
    case "accept-failed":
      return `${e.error}; trying again in ${e.retryInMs} ms`;
  }
}

async function main(args: string[]): Promise<void> {
  const { values } = parseCli(args, {
    ...SERVER_FLAGS,
    once: { type: "boolean" },
    json: { type: "boolean" },
    "max-guest-bytes": { type: "string" },
    "max-guests": { type: "string" },
    "max-gang-bytes": { type: "string" },
    "handshake-timeout": { type: "string" },
    "idle-timeout": { type: "string" },
  }, { options: SERVER_PATHS });
  if (!values.listen) throw new UsageError("--listen is required");
  if (!values.dir) throw new UsageError("--dir is required");
  const address = parseAddress(values.listen, "--listen", true);
  const size = (flag: "max-guest-bytes" | "max-gang-bytes") =>
    values[flag] ? parseSize(values[flag], `--${flag}`) : undefined;
  const millis = (flag: "handshake-timeout" | "idle-timeout") =>
    values[flag] ? parseDuration(values[flag], `--${flag}`) : undefined;
  const limits = {
    maxGuestBytes: size("max-guest-bytes"),
    maxGangBytes: size("max-gang-bytes"),
    maxGuests: values["max-guests"]
      ? parseCount(values["max-guests"], "--max-guests", MAX_GUESTS)
      : undefined,
    handshakeTimeoutMs: millis("handshake-timeout"),
    idleTimeoutMs: millis("idle-timeout"),
  };
  const transport = await listenerTransport(values, values.listen, "receive");
  // Only this user may write where guests' RAM lands (made, mode 0700, when missing).
  const uid = Deno.uid();
  if (uid === null) throw new Error("Cannot check the target directory: no user ids here");
  // Listening first: a port in use leaves no directory behind.
  const listener = listenForSenders(address, transport.listen);
  const dir = ownPrivateDir(values.dir, "the target directory", uid);
  using _lock = lockDirectory(dir);
  let gangFrom: string | undefined; // the peer whose gang is in progress
  const log = (event: ReceiveEvent) => {
    if (event.event === "accepted") gangFrom = event.peer;
    if ((event.event === "complete" || event.event === "failed") && event.peer === gangFrom) {
      gangFrom = undefined;
    }
    if (values.json) console.log(JSON.stringify(event));
    console.error(`receive: ${describe(event)}`);
  };
  // First signal: no more senders (the gang in progress ends first); second: abandon it too.
  const stop = new AbortController();
  const abandon = new AbortController();
  const onSignal = () => {
    if (gangFrom === undefined) Deno.exit(0);
    const again = stop.signal.aborted;
    log({ event: "stopping", peer: gangFrom, abandon: again });
    if (again) abandon.abort(new Error("The target was stopped: it abandoned the gang"));
    stop.abort();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // It says it listens once a gang a killed receiver left is undone (serveGangs).
  await serveGangs(listener, {
    dir,
    once: values.once,
    token: transport.token,
    ...limits,
    signal: stop.signal,
    abandon: abandon.signal,
    log,
  });
  Deno.exit(abandon.signal.aborted ? 1 : 0);
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
