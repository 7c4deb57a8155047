/**
 * The target agent as a child process: what it leaves on this host once
 * it has ended, stopped or killed. No guest is started.
 */
import { assert, assertEquals } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { fileExists } from "./qemu_helpers.ts";

Deno.test("an agent process killed by a signal leaves none of the TLS files made for it", async () => {
  const agent = await AgentProcess.start();
  try {
    const dir = agent.credentials!.dir;
    assert(await fileExists(dir), "its credentials are made");
    agent.server.process.kill("SIGKILL");
    assertEquals((await agent.exited).signal, "SIGKILL");
    assert(!(await fileExists(dir)), `"${dir}" is left behind by the killed agent`);
  } finally {
    await agent.stop();
  }
});

Deno.test("an agent process stopped leaves none of the files and directories made for it", async () => {
  const agent = await AgentProcess.start();
  const made = [agent.credentials!.dir, agent.dir];
  await agent.stop();
  for (const path of made) assert(!(await fileExists(path)), `"${path}" is left behind`);
  const runDirs = (await Array.fromAsync(Deno.readDir("/tmp"))).filter((e) =>
    e.name.startsWith(`gangway-agent-${Deno.pid}-`)
  );
  assertEquals(runDirs, [], "its run directory is left behind");
});
