/**
 * Failures of a migration to a target agent: the agent killed at each
 * stage, the source side killed in the middle of a round. The source
 * guest must run on every time, the agent's host must be clean once an
 * agent runs there again, and that agent must take the next gang.
 */
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { migrateQemuGang, type QemuGangOptions } from "../src/gang_migration.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { fileExists, Guests, testImage, uniqueName } from "./qemu_helpers.ts";

const EVACUATE = fileURLToPath(new URL("../examples/evacuate.ts", import.meta.url));

/** An agent that keeps its files in the same places each time it is started. */
function agentAt(dir: string, runDir: string): Promise<AgentProcess> {
  return AgentProcess.start({ dir, runDir });
}

/** The QEMUs whose RAM file is in the agent's directory. */
async function qemusOf(agent: AgentProcess): Promise<number[]> {
  const { usable } = await findQemus();
  return usable.filter((q) => q.commandLine.instance.ramPath.startsWith(`${agent.dir}/`))
    .map((q) => q.pid);
}

/** The source runs, and its heartbeat goes on. */
async function assertRuns(source: QemuGuest, stage: string): Promise<void> {
  assertEquals((await source.status()).status, "running", `after the agent died ${stage}`);
  const beat = (await source.heartbeat())!;
  await source.waitForHeartbeat({ after: beat.counter, timeoutMs: 20_000 });
  assert(await fileExists(source.ramPath), `its RAM file is there after ${stage}`);
}

Deno.test("a source guest runs on whenever its target agent dies or its source side is killed, and the agent's host is clean for the next gang", async () => {
  await using guests = new Guests();
  const dir = `/dev/shm/gangway-fault-${Deno.pid}`;
  const runDir = await Deno.makeTempDir({ prefix: "gangway-fault-agent-" });
  let agent = await agentAt(dir, runDir);
  try {
    let source = guests.add(
      await QemuGuest.start({
        name: uniqueName("fa"),
        memoryMiB: 128,
        image: await testImage(),
        workload: { checkEverySeconds: 1 },
      }),
    );
    await source.waitUntilBooted();

    // The agent is killed at each stage of the migration.
    const kill = () => agent.server.process.kill("SIGKILL");
    const stages: [string, QemuGangOptions][] = [
      ["before the RAM", { onStep: (s) => s.startsWith("Scanning") && kill() }],
      ["during a live round", { onRound: (r) => !r.final && kill() }],
      ["as the gang pauses", { onStep: (s) => s.startsWith("Pausing") && kill() }],
      ["before the switch-over", { beforeSwitchOver: () => kill() }],
    ];
    for (const [stage, hooks] of stages) {
      const target = await agent.connect();
      try {
        await assertRejects(() => migrateQemuGang([source], target, { maxRounds: 3, ...hooks }));
      } finally {
        await target.close();
      }
      await agent.exited;
      await assertRuns(source, stage);
      // An agent started again cleans up what the dead one left.
      agent = await agentAt(dir, runDir);
      const recovered = agent.server.events.find((e) => e.event === "recovered");
      assertEquals(recovered?.removed, [source.name], `the dead agent's destination ${stage}`);
      assertEquals(await qemusOf(agent), [], `no destination is left ${stage}`);
      assert(!(await fileExists(`${dir}/${source.name}`)), `no RAM file is left ${stage}`);
    }

    // The source side is killed in the middle of a round: the agent stops what it started.
    await guests.detach(source);
    const evacuate = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", EVACUATE, "--target", `127.0.0.1:${agent.address.port}`],
        ...["--ca", agent.credentials!.caFile, "--token-file", agent.credentials!.tokenFile],
        "--max-bandwidth",
        String(16 * 2 ** 20),
        `${source.runDir}/${source.name}.qmp`,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = evacuate.stderr.pipeThrough(new TextDecoderStream()).getReader();
    for (let text = ""; !text.includes("Scanning and sending");) {
      const { value, done } = await reader.read();
      assert(!done, `evacuate.ts ended early: ${text}`);
      text += value;
    }
    evacuate.kill("SIGKILL");
    await evacuate.status;
    await reader.cancel();
    source = guests.add(await QemuGuest.attach(`${source.runDir}/${source.name}.qmp`));
    for (let tries = 0; (await qemusOf(agent)).length > 0; tries++) {
      assert(tries < 200, "the agent did not stop the destination of the abandoned gang");
    }
    assert(!(await fileExists(`${dir}/${source.name}`)), "no RAM file is left");
    await assertRuns(source, "the source side was killed");

    // And the agent takes the next gang; its source removes the killed source's relay sockets.
    await using target = await agent.connect();
    const { report } = await migrateQemuGang([source], target);
    assertEquals(report.guests.map((g) => g.migrated), [true]);
    assertEquals((await target.keptGuests()).map((g) => g.name), [source.name]);
    const relayDirs = (await Array.fromAsync(Deno.readDir(tmpdir()))).filter((e) =>
      e.name.startsWith(`gw-relay-${evacuate.pid}-`)
    );
    assertEquals(relayDirs, [], "the relay directory of the killed source is left");
  } finally {
    await agent.stopGuests().catch(() => {});
    await agent.stop();
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
