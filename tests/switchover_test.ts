import { assert, assertEquals } from "./_assert.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { localDestination } from "../src/qemu/destination.ts";
import { switchOverGang } from "../src/switchover/switch_over.ts";
import { assertContinued, copyRamFile, Guests, testImage, uniqueName } from "./qemu_helpers.ts";

Deno.test("switchOverGang() moves the guests it can and resumes the source of a destination killed at switch-over", async () => {
  await using guests = new Guests();
  const image = await testImage();
  const sources = await Promise.all([0, 1].map(async (i) =>
    guests.add(
      await QemuGuest.start({
        name: uniqueName(`sw${i}`),
        memoryMiB: 128,
        image,
        workload: { checkEverySeconds: 1 },
      }),
    )
  ));
  await Promise.all(sources.map((s) => s.waitUntilBooted()));
  const destinations = await Promise.all(
    sources.map(async (s) =>
      guests.add(await QemuGuest.startDestination(s.machine, { name: uniqueName("swdst") }))
    ),
  );

  // The gang is paused and its RAM is at the target, as after gangway's final round.
  await Promise.all(sources.map((s) => s.pause()));
  for (const [i, source] of sources.entries()) {
    await copyRamFile(source.ramPath, destinations[i]!.ramPath);
  }
  const last = (await sources[0]!.heartbeat())!;
  await destinations[1]!.kill();

  const results = await switchOverGang(
    sources.map((source, i) => ({ source, destination: localDestination(destinations[i]!) })),
  );
  assertEquals(results.map((r) => r.ok), [true, false]);
  const failed = results[1]!;
  assert(!failed.ok && failed.error.includes(sources[1]!.name), !failed.ok ? failed.error : "");

  await assertContinued(last, destinations[0]!);
  assertEquals(
    (await sources[1]!.status()).status,
    "running",
    "the source of the failed guest runs again",
  );
  const beat = (await sources[1]!.heartbeat())!;
  assert(
    (await sources[1]!.waitForHeartbeat({ after: beat.counter, timeoutMs: 10_000 })).counter >
      beat.counter,
  );
});
