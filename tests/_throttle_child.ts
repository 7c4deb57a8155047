/**
 * A child of cpu_throttle_test.ts: throttles the process whose pid it is
 * given, prints "slowed", then waits to be killed (SIGKILL: nothing of its
 * own undoes the throttle; the watchdog must).
 *
 * @module
 */
import { CpuThrottle } from "../src/qemu/cpu_throttle.ts";

const throttle = await CpuThrottle.start([{ pid: Number(Deno.args[0]), cpus: 1 }]);
// Slowed once it has used some CPU since the start (a process that used none is left alone).
while ((await throttle.slow(0.5)) === 0) await new Promise((resolve) => setTimeout(resolve, 20));
console.log("slowed");
setInterval(() => {}, 60_000);
