/**
 * Your own lab experiment: two guests, one link rate, gangway against
 * QEMU's own migration, the two numbers that matter.
 *
 *   deno run -A examples/lab.ts [RATE]
 *
 * `-A`, as `deno task lab` has: the lab reaches host B's QMP sockets and
 * serial logs through `/proc/PID/root`, where Deno asks for `--allow-all`.
 *
 * As root: the lab makes two network namespaces joined by a veth link
 * shaped to RATE (default 1gbit); without root it falls back to loopback.
 * Each method gets a fresh gang booted the same way; everything started is
 * ended and removed when the session closes, also on Ctrl-C. As with
 * `deno task lab`, the exit status is 1 when gangway lost a guest; a guest
 * QEMU lost is a warning (its migration completed, its figures count).
 *
 * @module
 */
import {
  formatRatios,
  type GangSpec,
  judgeLostGuests,
  LabSession,
  measureMethod,
  parseRate,
} from "../src/lab/mod.ts";

const USAGE = "usage: deno run -A examples/lab.ts [RATE] (RATE: 1gbit, 200mbit, 10gbit... or none)";
const [link = "1gbit", ...extra] = Deno.args;
if (link === "--help" || link === "-h") {
  console.log(USAGE);
  Deno.exit(0);
}
try {
  if (extra.length > 0) throw new Error(`one RATE at most, got ${Deno.args.length} arguments`);
  parseRate(link); // checked before anything starts
} catch (error) {
  console.error(`lab: ${(error as Error).message}\n${USAGE}`);
  Deno.exit(2);
}
const gang: GangSpec = {
  guests: 2,
  memoryMiB: 256,
  idleSeconds: 5,
  workload: "idle",
  kernelArgs: [],
};

// Step 1 -- the two hosts and the guest image.
await using lab = await LabSession.open({ link });
console.log(lab.network.describe());

// Step 2 -- the same gang, migrated by each method (boot, idle, migrate, check, clean up).
const gangway = await measureMethod(lab, "gangway", gang);
const qemu = await measureMethod(lab, "qemu", gang);

// Step 3 -- the numbers.
for (const m of [gangway, qemu]) {
  console.log(
    `${m.method}: ${(m.bytesOnWire / 1e6).toFixed(1)} MB on the link, ` +
      `TMT ${m.tmtSeconds.toFixed(2)} s, ${m.resumed}/${gang.guests} guests resumed`,
  );
}
console.log(formatRatios(gangway, qemu));

// Step 4 -- the verdict, by the command's rule: only gangway's own losses fail the run.
const { failures, warnings } = judgeLostGuests([{ config: gang, methods: [gangway, qemu] }]);
for (const warning of warnings) console.error(`warning: ${warning}`);
if (failures.length > 0) {
  console.error(`error: Cannot call the lab run good: ${failures.join("; ")}`);
  Deno.exitCode = 1; // not Deno.exit(): the session still closes and cleans up
}
