import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { BUSY_CPUS, CpuThrottle } from "../src/qemu/cpu_throttle.ts";
import {
  cgroupPath,
  findCpuHierarchy,
  parseCgroupMounts,
  processCgroup,
  processCpuSeconds,
} from "../src/qemu/_cgroups.ts";
import { nextThrottle, throttleRounds } from "../src/plan/convergence.ts";
import { pathExists } from "../src/_path_exists.ts";
import { waitFor } from "./fault_fixtures.ts";
import { runChildScript } from "./_fixtures.ts";

Deno.test("parseCgroupMounts() finds v1 hierarchies with their controllers and v2 mounts", () => {
  const mountinfo = [
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct",
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "40 30 0:37 / /sys/fs/cgroup/my\\040unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
  ].join("\n");
  assertEquals(parseCgroupMounts(mountinfo), [
    { version: 1, mount: "/sys/fs/cgroup/cpu,cpuacct", controllers: ["rw", "cpu", "cpuacct"] },
    { version: 1, mount: "/sys/fs/cgroup/memory", controllers: ["rw", "memory"] },
    { version: 2, mount: "/sys/fs/cgroup/my unified", controllers: [] },
  ]);
});

Deno.test("cgroupPath() reads the v2 line or the v1 line of the cpu controller", () => {
  const text = "4:memory:/m\n1:cpu,cpuacct:/machine/qemu-1\n0::/system.slice/qemu.service\n";
  assertEquals(cgroupPath(text, 1), "/machine/qemu-1");
  assertEquals(cgroupPath(text, 2), "/system.slice/qemu.service");
  assertEquals(cgroupPath("2:cpuacct:/a\n", 1), undefined, "cpuacct is not cpu");
});

Deno.test("nextThrottle() steps as QEMU's auto-converge does, up to the most allowed", () => {
  const steps = { max: 0.5 };
  assertEquals(nextThrottle(0, steps), 0.2);
  assertEquals(nextThrottle(0.2, steps), 0.3);
  assertEquals(nextThrottle(0.4, steps), 0.5);
  assertEquals(nextThrottle(0.5, steps), undefined);
  assertEquals(nextThrottle(0, { max: 0.1 }), 0.1, "never past the most");
  assertEquals(nextThrottle(0, { max: 0 }), undefined, "0: never throttle");
  assertEquals(nextThrottle(0.3, { max: 0.99, step: 0.3 }), 0.6);
  assertEquals(throttleRounds({ max: 0.99 }), 9, "20% to 90%, then 99%");
  assertEquals(throttleRounds({ max: 0.5 }), 4);
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const hierarchy = await findCpuHierarchy().catch(() => undefined);
const root = Deno.uid() === 0;

/** A process that spins, as a busy guest's vCPU does. */
function spinner(): Deno.ChildProcess {
  return new Deno.Command("sh", { args: ["-c", "while :; do :; done"] }).spawn();
}

async function cgroupOf(pid: number): Promise<string | undefined> {
  return await processCgroup(pid, hierarchy!);
}

Deno.test({
  name: "CpuThrottle slows a busy process by a share of the CPU it used, and puts it back",
  ignore: !hierarchy || !root,
  async fn() {
    const busy = spinner();
    const idle = new Deno.Command("sleep", { args: ["600"] }).spawn();
    try {
      const origin = await cgroupOf(busy.pid);
      const throttle = await CpuThrottle.start([
        { pid: busy.pid, cpus: 2 },
        { pid: idle.pid, cpus: 1 },
      ]);
      assertEquals(await cgroupOf(busy.pid), origin, "nothing moves before it is slowed");
      // What it used since the start is what its quota is a share of: let it use some.
      await waitFor(() => cpuSecondsSync(busy.pid) > 0.3, "the spinner to use some CPU");
      assertEquals(await throttle.slow(0.3), 1, "the spinner is slowed, the sleeper is not");
      assertEquals(await cgroupOf(idle.pid), await cgroupOf(Deno.pid), "the sleeper stays");
      const group = (await cgroupOf(busy.pid))!;
      assert(group !== origin && group.includes("gangway-throttle-"), group);
      // 70% of what it used: about 70% of one CPU (it spins on one; its time is counted in ticks
      // of 10 ms), at least of BUSY_CPUS.
      const quota = await quotaOf(group);
      assert(quota <= 77_000 && quota >= 0.7 * BUSY_CPUS * 100_000, `quota ${quota}`);
      await throttle.slow(0.9);
      assertEquals(throttle.level, 0.9);
      const tenth = await quotaOf(group);
      assert(Math.abs(tenth - quota / 7) <= 1, `a tenth of the same base: ${tenth} after ${quota}`);
      // The kernel holds it back: its cgroup counts the periods in which it was throttled.
      const stat = `${group}/cpu.stat`;
      await waitFor(
        () => /nr_throttled [1-9]/.test(Deno.readTextFileSync(stat)),
        "a throttled period",
      );
      await throttle.release(0);
      assertEquals(await cgroupOf(busy.pid), origin);
      assertEquals(await pathExists(group), false, "its cgroup is removed");
      await throttle.end();
      assertEquals(await pathExists(group.slice(0, group.lastIndexOf("/"))), false);
      await assertRejects(() => throttle.slow(0.2), Error, "ended");
    } finally {
      for (const child of [busy, idle]) {
        child.kill("SIGKILL");
        await child.status;
      }
    }
  },
});

/** The quota of a cgroup's period, in microseconds. */
async function quotaOf(group: string): Promise<number> {
  return hierarchy!.version === 2
    ? Number((await Deno.readTextFile(`${group}/cpu.max`)).split(" ")[0])
    : Number(await Deno.readTextFile(`${group}/cpu.cfs_quota_us`));
}

function cpuSecondsSync(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

Deno.test("processCpuSeconds() reads a process's CPU time, and nothing of one that exited", async () => {
  const own = await processCpuSeconds(Deno.pid);
  assert(own !== undefined && own > 0, `${own}`);
  const quick = new Deno.Command("true").spawn();
  await quick.status;
  assertEquals(await processCpuSeconds(quick.pid), undefined);
});

Deno.test({
  name: "CpuThrottle refuses a throttle out of range, and ends with a process that exited",
  ignore: !hierarchy || !root,
  async fn() {
    const quick = new Deno.Command("true").spawn();
    await quick.status;
    await using throttle = await CpuThrottle.start([{ pid: quick.pid, cpus: 1 }]);
    await assertRejects(() => throttle.slow(1), RangeError, "between 0 and 0.99");
    assertEquals(await throttle.slow(0.5), 0, "nothing to slow: it has exited");
  },
});

Deno.test({
  name: "CpuThrottle's watchdog puts a process back when the throttling process is killed",
  ignore: !hierarchy || !root,
  async fn() {
    // Where it came from has a name a shell could split: spaces inside and at its end, a tab.
    await using odd = await testCgroup("gangway test\torigin ");
    const busy = spinner();
    await Deno.writeTextFile(`${odd.path}/cgroup.procs`, String(busy.pid));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_throttle_child.ts", import.meta.url).href, String(busy.pid)],
      stdout: "piped",
    }).spawn();
    try {
      const origin = await cgroupOf(busy.pid);
      assertEquals(origin, odd.path);
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let said = "";
      while (!said.includes("\n")) said += (await reader.read()).value ?? "\n";
      assertEquals(said, "slowed\n");
      const group = (await cgroupOf(busy.pid))!;
      assert(group !== origin, "the child slowed it");
      child.kill("SIGKILL");
      await child.status;
      // The watchdog is no child of this test: its work shows in the cgroup file system.
      await waitFor(() => !existsSync(group), `the watchdog to remove ${group}`);
      assertEquals(await cgroupOf(busy.pid), origin);
      await reader.cancel();
    } finally {
      busy.kill("SIGKILL");
      await busy.status;
      await child.status.catch(() => {});
    }
  },
});

Deno.test("CpuThrottle says why it cannot throttle without --allow-all, before it touches a guest", async () => {
  const code = `import { CpuThrottle } from "${
    new URL("../src/qemu/cpu_throttle.ts", import.meta.url).href
  }";
    try { await CpuThrottle.start([{ pid: Deno.pid, cpus: 1 }]); console.log(JSON.stringify("started")); }
    catch (error) { console.log(JSON.stringify(error.message)); }`;
  const said = await runChildScript(code, ["--allow-read", "--allow-write", "--allow-run"]);
  assert(String(said).startsWith("Cannot throttle the guests' CPU: "), String(said));
  assert(String(said).includes("--allow-all"), String(said));
});

/** A cgroup of the test's own at the hierarchy's root; removed (emptied first) when disposed. */
async function testCgroup(name: string): Promise<AsyncDisposable & { path: string }> {
  const path = `${hierarchy!.mount}/${name}`;
  await Deno.mkdir(path);
  return {
    path,
    async [Symbol.asyncDispose]() {
      const pids = await Deno.readTextFile(`${path}/cgroup.procs`).catch(() => "");
      for (const pid of pids.split("\n").filter((line) => line !== "")) {
        await Deno.writeTextFile(`${hierarchy!.mount}/cgroup.procs`, pid).catch(() => {});
      }
      await Deno.remove(path).catch(() => {});
    },
  };
}

Deno.test({
  name: "CpuThrottle puts a process whose cgroup is gone into that cgroup's parent",
  ignore: !hierarchy || !root,
  async fn() {
    const busy = spinner();
    try {
      const origin = await testCgroup("gangway-test-gone");
      await Deno.writeTextFile(`${origin.path}/cgroup.procs`, String(busy.pid));
      await using throttle = await CpuThrottle.start([{ pid: busy.pid, cpus: 1 }]);
      await waitFor(() => cpuSecondsSync(busy.pid) > 0.3, "the spinner to use some CPU");
      assertEquals(await throttle.slow(0.5), 1);
      // Emptied, it goes (as systemd removes a scope its processes left).
      await origin[Symbol.asyncDispose]();
      assertEquals(await pathExists(origin.path), false);
      await throttle.release(0);
      assertEquals(await cgroupOf(busy.pid), hierarchy!.mount);
    } finally {
      busy.kill("SIGKILL");
      await busy.status;
    }
  },
});

Deno.test({
  name: "CpuThrottle leaves alone a process another throttle holds, or whose threads are apart",
  ignore: !hierarchy || !root,
  async fn() {
    const busy = spinner();
    // A Deno process has threads besides its main one; one of them is put in a cgroup of its own.
    const threads = new Deno.Command(Deno.execPath(), {
      args: ["eval", "while (true) {}"],
    }).spawn();
    await using apart = await testCgroup("gangway-test-thread");
    try {
      // Once it runs its script, its V8 workers (threads that last) are there.
      await waitFor(() => cpuSecondsSync(threads.pid) > 0.2, "the Deno child to run");
      const worker = [...Deno.readDirSync(`/proc/${threads.pid}/task`)].map((t) => t.name)
        .find((tid) =>
          Deno.readTextFileSync(`/proc/${threads.pid}/task/${tid}/comm`).startsWith("V8 ")
        )!;
      await Deno.writeTextFile(`${apart.path}/tasks`, worker);
      await using first = await CpuThrottle.start([{ pid: busy.pid, cpus: 1 }]);
      await using second = await CpuThrottle.start([
        { pid: busy.pid, cpus: 1 },
        { pid: threads.pid, cpus: 1 },
      ]);
      const [busyAt, threadsAt] = [cpuSecondsSync(busy.pid), cpuSecondsSync(threads.pid)];
      await waitFor(
        () =>
          cpuSecondsSync(busy.pid) > busyAt + 0.3 && cpuSecondsSync(threads.pid) > threadsAt + 0.3,
        "both to use some CPU",
      );
      assertEquals(await first.slow(0.5), 1);
      assertEquals(await second.slow(0.5), 0);
      assertEquals(second.leftAlone.map((p) => p.pid), [busy.pid, threads.pid]);
      assert(second.leftAlone[0]!.reason.startsWith("another migration throttles it"));
      assert(second.leftAlone[1]!.reason.includes("threads are in cgroups of their own"));
      assertEquals(await cgroupOf(threads.pid), await cgroupOf(Deno.pid), "not moved");
    } finally {
      for (const child of [busy, threads]) {
        child.kill("SIGKILL");
        await child.status;
      }
    }
  },
});

Deno.test({
  name: "CpuThrottle ends cleanly when its watchdog is gone, every process back",
  ignore: !hierarchy || !root,
  async fn() {
    const busy = spinner();
    try {
      const origin = await cgroupOf(busy.pid);
      const throttle = await CpuThrottle.start([{ pid: busy.pid, cpus: 1 }]);
      await waitFor(() => cpuSecondsSync(busy.pid) > 0.3, "the spinner to use some CPU");
      assertEquals(await throttle.slow(0.5), 1);
      const group = (await cgroupOf(busy.pid))!;
      const parent = group.slice(0, group.lastIndexOf("/"));
      const killed = await new Deno.Command("pkill", {
        args: ["-KILL", "-f", `gangway-throttle-watchdog ${parent}`],
      }).output();
      assert(killed.success, "the watchdog was found and killed");
      await throttle.end();
      assertEquals(await cgroupOf(busy.pid), origin);
      assertEquals(await pathExists(parent), false);
    } finally {
      busy.kill("SIGKILL");
      await busy.status;
    }
  },
});
