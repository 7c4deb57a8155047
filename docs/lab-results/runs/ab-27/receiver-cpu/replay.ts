/**
 * One pass of the guest RAM files in a directory (a copy of a lab gang's,
 * taken while it ran) over loopback, receiver in its own process, with
 * each side's CPU seconds: what the receiver costs apart from the lab.
 *
 * deno run -A replay.ts DIR [RUNS]
 *
 * @module
 */
import { Gang } from "../../../../../src/scan/gang.ts";
import { transferGang } from "../../../../../src/transfer/transfer_gang.ts";
import { randomSeed } from "../../../../../src/transfer/seed.ts";
import { ReceiverProcess } from "../../../../../src/target/receiver_process.ts";

const source = Deno.args[0] ?? "/dev/shm/deb4";
const runs = Number(Deno.args[1] ?? 2);
const paths = [...Deno.readDirSync(source)].map((e) => `${source}/${e.name}`).sort();
const target = `/dev/shm/replay-target-${Deno.pid}`;
Deno.mkdirSync(target);

/** CPU seconds (user + system) of a process. */
function cpu(pid: string): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The receiver process of `dir`, found by its command line. */
function receiverPid(dir: string): string {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (cmdline.includes(dir) && cmdline.includes("receive")) return entry.name;
    } catch {
      // gone
    }
  }
  throw new Error("no receiver process");
}

try {
  for (let run = 0; run < runs; run++) {
    await using receiver = await ReceiverProcess.start({ dir: target, args: ["--insecure"] });
    using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })), {
      seed: randomSeed(),
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: receiver.port });
    const pid = receiverPid(target);
    const [sender0, receiver0, started] = [cpu("self"), cpu(pid), performance.now()];
    await transferGang(gang, conn, { maxRounds: 1 });
    const wall = (performance.now() - started) / 1000;
    console.log(
      `sender cpu ${(cpu("self") - sender0).toFixed(2)} s, receiver cpu ${
        (cpu(pid) - receiver0).toFixed(2)
      } s, wall ${wall.toFixed(3)} s`,
    );
    for (let i = 0; i < paths.length; i++) Deno.removeSync(`${target}/g${i}`);
  }
} finally {
  Deno.removeSync(target, { recursive: true });
}
