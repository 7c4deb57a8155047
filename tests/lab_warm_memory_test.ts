import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { describeWarmed, warmMemory } from "../src/lab/warm_memory.ts";
import { runOrFail } from "./_fixtures.ts";
import {
  availableMemory,
  MEMORY_HEADROOM_BYTES,
  memoryToWarm,
  residentBytes,
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

Deno.test("warmMemory on a file system that fills up makes ready what fits, and the run goes on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-warm-full-" });
  await runOrFail("mount", "-t", "tmpfs", "-o", "size=3m", "gangway-warm-full", dir);
  try {
    const warmed = await warmMemory(dir, 64 * 2 ** 20);
    assert(warmed.bytes < 4 * 2 ** 20, `${warmed.bytes} bytes in a 3 MiB file system`);
    assertEquals([...Deno.readDirSync(dir)], []);
  } finally {
    await runOrFail("umount", dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("memoryToWarm asks a quarter more than the processes hold, never more than is spare", async () => {
  const held = await residentBytes([Deno.pid]);
  assert(held > 10 * 2 ** 20, `a Deno process holds more than ${held} bytes`);
  assertEquals(await residentBytes([2 ** 22 + 1]), 0, "a process that is gone holds nothing");
  const warm = await memoryToWarm([Deno.pid]);
  assert(Math.abs(warm - 1.25 * held) < 0.1 * held, `${warm} for ${held} held`);
  // 400 times this process asks for more than there is: what is spare is what it gets. Spare
  // memory moves between readings (by gigabytes while other processes start guests), so it is
  // read before and after.
  const asked = 400 * 1.25 * held;
  const spare = async () => (await availableMemory()) - MEMORY_HEADROOM_BYTES;
  const before = await spare();
  assert(asked > before + 2 ** 30, `${asked} asked, ${before} spare`);
  const all = await memoryToWarm(Array.from({ length: 400 }, () => Deno.pid));
  const after = await spare();
  assert(
    all > Math.min(before, after) - 2 ** 28 && all < Math.max(before, after) + 2 ** 28,
    `${all} given, ${before} then ${after} spare`,
  );
});

Deno.test("describeWarmed says how much memory was made ready and how long it took", () => {
  assertEquals(describeWarmed({ bytes: 988 * 2 ** 20, seconds: 1.454 }), "0.96 GiB in 1.45 s");
});
