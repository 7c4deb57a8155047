/**
 * `deno task receive -- --listen HOST:PORT --dir DIR [--once] [--json]
 * [--token T] [--max-guest-bytes SIZE] [--max-guests N]`
 *
 * The target side: receives gangs, one at a time, writing each guest's RAM
 * to DIR/<guest-name>. Logs one line per event on stderr (with --json, one
 * JSON object per event on stdout). With --once it exits after the first
 * gang received and verified.
 *
 * Requires `--allow-ffi`, `--allow-net`, `--allow-write` (DIR) and
 * `--allow-env=GANGWAY_LIB`.
 *
 * @module
 */
import { lockDirectory } from "../native/dir_lock.ts";
import { type ReceiverEvent, serveGangs } from "../transfer/receiver.ts";
import { parseCli, runMain, UsageError } from "./_cli.ts";
import { parseAddress, parseCount, parseSize } from "./_units.ts";

const USAGE =
  "usage: deno task receive -- --listen HOST:PORT --dir DIR [--once] [--json] [--token T] [--max-guest-bytes SIZE] [--max-guests N]";

function describe(e: ReceiverEvent): string {
  switch (e.event) {
    case "listening":
      return `listening on ${e.address}`;
    case "accepted":
      return `${e.peer}: receiving ${e.guests.length} guests (${
        e.guests.map((g) => g.name).join(", ")
      })`;
    case "round":
      return `${e.peer}: round ${e.round}${e.final ? " (final)" : ""} applied`;
    case "complete":
      return `${e.peer}: complete, every digest matched: ${e.guests.map((g) => g.path).join(", ")}`;
    case "failed":
      return `${e.peer}: failed: ${e.error}`;
  }
}

async function main(args: string[]): Promise<void> {
  const { values } = parseCli(args, {
    listen: { type: "string" },
    dir: { type: "string" },
    once: { type: "boolean" },
    json: { type: "boolean" },
    token: { type: "string" },
    "max-guest-bytes": { type: "string" },
    "max-guests": { type: "string" },
  });
  if (!values.listen) throw new UsageError("--listen is required");
  if (!values.dir) throw new UsageError("--dir is required");
  const address = parseAddress(values.listen, "--listen", true);
  const log = (event: ReceiverEvent) => {
    if (values.json) console.log(JSON.stringify(event));
    console.error(`receive: ${describe(event)}`);
  };
  using _lock = lockDirectory(values.dir);
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ ...address, transport: "tcp" });
  } catch (error) {
    throw new Error(
      `Cannot listen on ${values.listen}: ${error instanceof Error ? error.message : error}`,
    );
  }
  const stop = new AbortController();
  Deno.addSignalListener("SIGINT", () => stop.abort());
  Deno.addSignalListener("SIGTERM", () => stop.abort());
  const addr = listener.addr as Deno.NetAddr;
  log({ event: "listening", address: `${addr.hostname}:${addr.port}` });
  await serveGangs(listener, {
    dir: values.dir,
    once: values.once,
    token: values.token,
    maxGuestBytes: values["max-guest-bytes"]
      ? parseSize(values["max-guest-bytes"], "--max-guest-bytes")
      : undefined,
    maxGuests: values["max-guests"] ? parseCount(values["max-guests"], "--max-guests") : undefined,
    signal: stop.signal,
    log,
  });
  Deno.exit(0);
}

if (import.meta.main) {
  await runMain(() => main(Deno.args), USAGE);
}
