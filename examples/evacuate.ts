/**
 * Evacuate this host: live-migrate a gang of QEMU guests to a target, all
 * at once, sending each distinct page content once for the whole gang.
 *
 *   deno run -A examples/evacuate.ts [--target-dir DIR] [--target-netns NS]
 *     [--target-address ADDR] [--device-state-port PORT]
 *     [--max-bandwidth BYTES_PER_S] [QMP_SOCKET...]
 *
 * With no QMP sockets it takes every gangway-launched guest of this host
 * (their memory backend is `gangway-ram`); guests started by hand are
 * given by their QMP socket and must follow docs/qemu.md. The target here
 * is this machine (a directory for the destinations' RAM, a receiver and
 * the destination QEMUs, optionally in a network namespace, with QEMU's
 * device state sent over TCP from --device-state-port up); the guests
 * keep running there after this script exits. The report goes to stdout
 * as JSON, progress to stderr.
 *
 * Permissions: --allow-ffi (the page library), --allow-run (QEMU, the
 * receiver, ps, cat, mkdir), --allow-net (QMP, the receiver), --allow-read
 * and --allow-write (run directories, RAM files), --allow-env. `-A` grants
 * them all; --allow-ffi and --allow-run are full access anyway.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { findQemus, migrateQemuGang, QemuGuest } from "../mod.ts";
import { LocalTarget } from "../src/target/local_target.ts";

const { values, positionals } = parseArgs({
  args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
  allowPositionals: true,
  options: {
    "target-dir": { type: "string" },
    "target-netns": { type: "string" },
    "target-address": { type: "string" },
    "device-state-port": { type: "string" },
    "max-bandwidth": { type: "string" },
  },
});
const say = (text: string) => console.error(`evacuate: ${text}`);

// Step 1 -- the gang: guests named on the command line, or every gangway guest here.
async function gangwayGuestSockets(): Promise<string[]> {
  const { usable } = await findQemus();
  return usable
    .filter((q) => q.commandLine.machine.backendId === "gangway-ram")
    .map((q) => q.commandLine.instance.qmpPath);
}
const sockets = positionals.length > 0 ? positionals : await gangwayGuestSockets();
const sources: QemuGuest[] = [];
for (const socket of sockets) {
  const guest = await QemuGuest.attach(socket);
  // A destination still waiting for its migration is not a guest to move.
  if ((await guest.status()).status === "inmigrate") await guest.detach();
  else sources.push(guest);
}
if (sources.length === 0) {
  say("no guest to evacuate");
  Deno.exit(0);
}
say(`evacuating ${sources.length} guests: ${sources.map((g) => g.name).join(", ")}`);

// Step 2 -- the target: a receiver and the destinations' RAM directory (in a namespace if asked).
const netns = values["target-netns"];
const target = await LocalTarget.start({
  dir: values["target-dir"],
  commandPrefix: netns ? ["ip", "netns", "exec", netns] : undefined,
  address: values["target-address"],
  deviceStatePort: values["device-state-port"] ? Number(values["device-state-port"]) : undefined,
});

// Step 3 -- scan, live rounds, pause, final round, verify, switch over.
try {
  const { report, destinations } = await migrateQemuGang(sources, target, {
    maxBandwidth: values["max-bandwidth"] ? Number(values["max-bandwidth"]) : undefined,
    onStep: say,
    onRound: (r) =>
      say(
        `round ${r.round}${r.final ? " (final)" : ""}: ${
          (r.bytesOnWire / 2 ** 20).toFixed(1)
        } MiB, ` +
          `${r.pages.sentIdentical} pages as references`,
      ),
  });
  for (const guest of report.guests) {
    say(`${guest.name}: running at the target, downtime ${guest.downtimeMs.toFixed(0)} ms`);
  }
  say(
    `moved ${(report.transfer.guestBytes / 2 ** 20).toFixed(0)} MiB of guest RAM with ` +
      `${(report.transfer.bytesOnWire / 2 ** 20).toFixed(1)} MiB on the wire in ${
        report.seconds.toFixed(1)
      } s`,
  );
  console.log(JSON.stringify(report));
  // The destinations keep running; let go of them.
  for (const destination of destinations) await destination.detach();
} catch (error) {
  say(
    `failed, the guests still run where they were: ${
      error instanceof Error ? error.message : error
    }`,
  );
  for (const source of sources) await source.detach().catch(() => {});
  Deno.exitCode = 1;
} finally {
  await target.close();
}
