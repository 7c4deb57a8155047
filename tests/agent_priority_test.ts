import { assertEquals } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { sourceLike } from "./_agent_fixtures.ts";
import { uniqueName } from "./qemu_helpers.ts";

/** A process's nice value, from /proc/PID/stat (field 19). */
async function niceOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

Deno.test({
  name:
    "the agent receives a gang with the weight of a thread per guest, and gives it back when the gang ends",
  // Raising a priority needs root (CAP_SYS_NICE).
  ignore: Deno.uid() !== 0,
  fn: async () => {
    // It kept it (red team): every later peer, unauthenticated ones too, was served at it.
    await using agent = await AgentProcess.start();
    const pid = agent.server.process.pid;
    const before = await niceOf(pid);
    {
      await using target = await agent.connect();
      const sources = await Promise.all(
        [0, 1, 2, 3].map((i) => sourceLike(uniqueName(`gwt-prio${i}`))),
      );
      const destinations = await target.prepareDestinations(sources);
      assertEquals(await niceOf(pid), Math.max(before - 6, -20), "4 guests: the weight of 4");
      await target.discard(destinations);
    }
    assertEquals(await niceOf(pid), before);
  },
});
