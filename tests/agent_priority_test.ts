import { assertEquals } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { sourceLike } from "./_agent_fixtures.ts";
import { uniqueName } from "./qemu_helpers.ts";
import { kernelTakesSlices, niceOf, parentOf, threadNices, threadSlices } from "./_proc.ts";
import { SHORTEST_SLICE_US } from "../src/native/thread_priority.ts";

/** What `read` says of every thread of every child of process `pid`, by child. */
async function ofChildren<T>(pid: number, read: (child: number) => Promise<T[]>): Promise<T[][]> {
  const found: T[][] = [];
  for await (const { name } of Deno.readDir("/proc")) {
    if (/^\d+$/.test(name) && await parentOf(Number(name)) === pid) {
      found.push(await read(Number(name)));
    }
  }
  return found;
}

/** The nice value of every thread of every child of process `pid`, by child. */
const childrenNices = (pid: number) => ofChildren(pid, threadNices);
/** The time slice of every thread of every child of process `pid`, flat. */
const childrenSlices = async (pid: number) => (await ofChildren(pid, threadSlices)).flat();

Deno.test({
  name:
    "the agent receives a gang with the weight of QEMU's multifd threads for its guests, lends it to its destinations until they run, and gives it back when the gang ends",
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
      const weight = Math.min(before, -8);
      assertEquals(await niceOf(pid), weight, "4 guests: the weight of 12 threads in 2");
      // Waiting for their guests, whose device state they load while the guests are paused.
      const lent = await childrenNices(pid);
      assertEquals(lent.length, 4, "a QEMU per guest");
      assertEquals(new Set(lent.flat()), new Set([weight]), `their threads: ${lent}`);
      if (kernelTakesSlices()) {
        // And its promptness: the agent's threads, and the destinations', take a core on waking.
        const slices = [...await threadSlices(pid), ...await childrenSlices(pid)];
        assertEquals(new Set(slices), new Set([SHORTEST_SLICE_US * 1000]), `slices: ${slices}`);
      }
      await target.discard(destinations);
    }
    assertEquals(await niceOf(pid), before);
  },
});
