import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { warmMemory } from "../src/lab/warm_memory.ts";
import {
  availableMemory,
  MEMORY_HEADROOM_BYTES,
  memoryToWarm,
  touchedMiB,
} from "../src/lab/memory_budget.ts";

Deno.test("warmMemory writes whole MiBs into its directory and leaves nothing there", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-warm-" });
  try {
    const warmed = await warmMemory(dir, 3 * 2 ** 20 + 1);
    assertEquals(warmed.bytes, 4 * 2 ** 20);
    assert(warmed.seconds > 0);
    assertEquals([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("warmMemory never writes over a file that is there already", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-warm-" });
  try {
    Deno.writeTextFileSync(`${dir}/warm-memory`, "someone's");
    await assertRejects(() => warmMemory(dir, 2 ** 20), Deno.errors.AlreadyExists);
    assertEquals(Deno.readTextFileSync(`${dir}/warm-memory`), "someone's");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("memoryToWarm asks twice what the guests touch, and never more than is spare beyond the headroom", async () => {
  const plan = { guests: 4, memoryMiB: 256, workload: "idle" as const };
  assertEquals(await memoryToWarm(plan), Math.round(2 * 4 * touchedMiB(plan) * 2 ** 20));
  const spare = (await availableMemory()) - MEMORY_HEADROOM_BYTES;
  const huge = await memoryToWarm({ guests: 100_000, memoryMiB: 4096, workload: "busy" });
  assert(huge <= spare && huge >= spare - 2 ** 30, `${huge} vs ${spare} spare`);
});
