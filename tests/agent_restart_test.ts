/**
 * A target agent that starts again on the run directory of an earlier one
 * knows the guests that moved there before: it lists them, and cleans up
 * after them when they exit, as it does for guests it moved itself.
 * Guests are QEMUs started paused and never booted.
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { RESUMED_MARK } from "../src/target/agent_gang.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { fileExists } from "./qemu_helpers.ts";
import { isAlive, killQuietly } from "../src/_processes.ts";
import { eventOf, smallMachine } from "./_agent_fixtures.ts";

Deno.test("an agent started again lists the guests that moved here before, and forgets them when they exit", async () => {
  const dir = `/dev/shm/gangway-rt-${Deno.pid}-found`;
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  await Deno.mkdir(dir, { recursive: true });
  // As an earlier agent left them: a guest it started (marked), and one that exited since.
  const moved = await QemuGuest.startDestination(await smallMachine(), {
    name: "moved",
    ramPath: join(dir, "moved"),
    runDir: join(runDir, "guests", "moved"),
  });
  const pid = moved.pid;
  await Deno.writeTextFile(join(runDir, "guests", "moved", RESUMED_MARK), "");
  await moved.detach();
  await Deno.mkdir(join(runDir, "guests", "gone"));
  await Deno.writeTextFile(join(runDir, "guests", "gone", RESUMED_MARK), "");
  await Deno.writeFile(join(dir, "gone"), new Uint8Array(4096));
  let agent: AgentProcess | undefined;
  try {
    agent = await AgentProcess.start({ dir, runDir, insecure: true });
    await using target = await agent.connect();
    const listed = await target.keptGuests();
    assertEquals(
      listed.map((g) => [g.name, g.pid, g.alive, g.ramPath]),
      [["moved", pid, true, join(dir, "moved")]],
      "the guests listed",
    );
    assertEquals((await target.agent.request("state", { guest: "moved" })).state, {
      alive: true,
      status: "inmigrate",
      running: false,
    });
    // The one that exited while no agent ran: its files go, its name is free again.
    assert(await eventOf(agent, (e) => e.event === "exited" && e.guest === "gone", 10_000));
    assert(!(await fileExists(join(dir, "gone"))), "the RAM file of a guest that exited stays");

    Deno.kill(pid, "SIGKILL");
    assert(
      await eventOf(agent, (e) => e.event === "exited" && e.guest === "moved", 10_000),
      "the agent sees a found guest exit",
    );
    assertEquals(await target.keptGuests(), []);
    assert(!(await fileExists(join(dir, "moved"))), "its RAM file is removed");
    assert(!(await fileExists(join(runDir, "guests", "moved"))), "its run directory is removed");
  } finally {
    await cleanUp([pid], agent, runDir, dir);
  }
});

Deno.test("an agent started again finds QEMUs started as another program: it keeps the guest, and stops the leftover", async () => {
  const dir = `/dev/shm/gangway-rt-${Deno.pid}-renamed`;
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  await Deno.mkdir(dir, { recursive: true });
  // QEMU as an agent started with --qemu-binary starts it: a program not called qemu-system-*.
  const qemu = join(runDir, "vm-runner");
  await Deno.symlink((await which("qemu-system-x86_64"))!, qemu);
  const start = async (name: string, moved: boolean) => {
    const guestDir = join(runDir, "guests", name);
    const guest = await QemuGuest.startDestination({ ...await smallMachine(), qemuBinary: qemu }, {
      name,
      ramPath: join(dir, name),
      runDir: guestDir,
    });
    if (moved) await Deno.writeTextFile(join(guestDir, RESUMED_MARK), "");
    await guest.detach();
    return guest.pid;
  };
  // A guest that moved here, and a destination whose gang the earlier agent never finished.
  const pids = [await start("renamed", true), await start("leftover", false)];
  let agent: AgentProcess | undefined;
  try {
    agent = await AgentProcess.start({ dir, runDir, insecure: true });
    await using target = await agent.connect();
    assertEquals((await target.keptGuests()).map((g) => [g.name, g.pid]), [["renamed", pids[0]]]);
    assert(await fileExists(join(runDir, "guests", "renamed", "renamed.qmp")), "its QMP socket");
    assert(await fileExists(join(dir, "renamed")), "its RAM file is removed");
    assertEquals(isAlive(pids[1]!), false, "the leftover destination runs on");
    assert(!(await fileExists(join(dir, "leftover"))), "the leftover's RAM file stays");
  } finally {
    await cleanUp(pids, agent, runDir, dir);
  }
});

/** Kills the test's QEMUs, stops the agent and removes its directories. */
async function cleanUp(
  pids: readonly number[],
  agent: AgentProcess | undefined,
  ...dirs: string[]
): Promise<void> {
  for (const pid of pids) killQuietly(pid);
  await agent?.stop();
  for (const dir of dirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/** The path of a program on PATH. */
async function which(program: string): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (await fileExists(join(dir, program))) return join(dir, program);
  }
  return undefined;
}

Deno.test("an agent that cannot start leaves none of the directories its starter named for it", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const mine = async () =>
    (await Array.fromAsync(Deno.readDir("/dev/shm"))).map((e) => e.name)
      .filter((name) => name.startsWith(`gangway-agent-${Deno.pid}-`));
  const before = await mine();
  try {
    // Its port is taken: it fails after it made its directories.
    await assertRejects(() =>
      AgentProcess.start({ insecure: true, port: (taken.addr as Deno.NetAddr).port })
    );
    assertEquals(await mine(), before, "RAM directories left in /dev/shm");
  } finally {
    taken.close();
  }
});
