import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { DeviceStateMigration, moveDeviceState } from "../src/qemu/device_state.ts";
import { localDestination } from "../src/qemu/destination.ts";
import { runQemuMigration } from "../src/qemu/qemu_migration.ts";
import {
  assertContinued,
  copyRamFile,
  fileExists,
  Guests,
  testImage,
  uniqueName,
} from "./qemu_helpers.ts";

const MiB = 1024 * 1024;
/** A 128 MiB idle guest that checks its blob every second. */
const GUEST = { memoryMiB: 128, workload: { checkEverySeconds: 1 } };

Deno.test("moveDeviceState() resumes the guest at the destination", async () => {
  await using guests = new Guests();
  const image = await testImage();
  // Busy: the guest keeps rewriting memory, so only a copy made while it is paused works.
  const source = guests.add(
    await QemuGuest.start({
      name: uniqueName("src"),
      memoryMiB: 128,
      image,
      workload: { mode: "busy", checkEverySeconds: 1 },
    }),
  );
  await source.waitUntilBooted();
  const destination = guests.add(
    await QemuGuest.startDestination(source.machine, { name: uniqueName("dst") }),
  );

  let copyMs = 0;
  const result = await moveDeviceState(source, localDestination(destination), {
    whilePaused: async () => {
      assertEquals((await source.status()).running, false);
      const started = performance.now();
      await copyRamFile(source.ramPath, destination.ramPath);
      copyMs = performance.now() - started;
    },
  });
  console.log(`RAM copy ${copyMs.toFixed(1)} ms;`, JSON.stringify(result));
  assert(result.transferredBytes < 2 * MiB, `QEMU sent ${result.transferredBytes} bytes`);
  assert(result.downtimeMs >= copyMs, "the copy was not inside the downtime");
  assertEquals((await destination.status()).status, "running");
  assertEquals((await source.status()).status, "postmigrate");

  await assertContinued((await source.heartbeat())!, destination);
  await source.close({ removeRam: true });
  assert(!source.alive);
  assert(!(await fileExists(source.ramPath)));
});

Deno.test("moveDeviceState() resumes the source when the destination dies before switch-over", async () => {
  await using guests = new Guests();
  const image = await testImage();
  const source = guests.add(
    await QemuGuest.start({ ...GUEST, name: uniqueName("src"), image }),
  );
  await source.waitUntilBooted();
  const doomed = guests.add(
    await QemuGuest.startDestination(source.machine, { name: uniqueName("dst") }),
  );
  await assertRejects(
    () => DeviceStateMigration.start(source, localDestination(doomed)),
    Error,
    "it is running (pause it and copy its RAM first, or use pauseBeforeSwitchover)",
  );

  const migration = await DeviceStateMigration.start(source, localDestination(doomed), {
    pauseBeforeSwitchover: true,
  });
  await migration.waitForSourcePaused();
  assertEquals((await source.status()).running, false);
  await doomed.kill();
  const error = await assertRejects(() => migration.finish());
  assert(/source "[^"]+" (resumed|is running)$/.test(error.message), error.message);
  assertEquals((await source.status()).status, "running");
  const after = (await source.heartbeat())!;
  await source.waitForHeartbeat({ after: after.counter + 1, timeoutMs: 5000 });

  // The same source still migrates, this time paused by the caller.
  const destination = guests.add(
    await QemuGuest.startDestination(source.machine, { name: uniqueName("dst") }),
  );
  await source.pause();
  await copyRamFile(source.ramPath, destination.ramPath);
  await moveDeviceState(source, localDestination(destination));
  await assertContinued((await source.heartbeat())!, destination);
});

Deno.test("runQemuMigration() moves a running guest with its RAM, with and without multifd zstd", async () => {
  await using guests = new Guests();
  const image = await testImage();
  const source = guests.add(
    await QemuGuest.start({ ...GUEST, name: uniqueName("src"), image }),
  );
  await source.waitUntilBooted();

  const middle = guests.add(
    await QemuGuest.startDestination(source.machine, { name: uniqueName("mid") }),
  );
  const plain = await runQemuMigration(source, middle, { maxBandwidth: 1024 * MiB });
  console.log("QEMU migration:", JSON.stringify(plain));
  assert(plain.transferredBytes > 16 * MiB, "the RAM did not cross");
  assert(plain.zeroPages > 0 && plain.normalPages > 0);
  await assertContinued((await source.heartbeat())!, middle);
  await source.close({ removeRam: true });

  const last = guests.add(
    await QemuGuest.startDestination(middle.machine, { name: uniqueName("dst") }),
  );
  const zstd = await runQemuMigration(middle, last, {
    multifd: true,
    compression: "zstd",
    maxBandwidth: 1024 * MiB,
  });
  console.log("QEMU migration, multifd zstd:", JSON.stringify(zstd));
  assert(zstd.multifdBytes > 16 * MiB, "the RAM did not go over multifd");
  await assertContinued((await middle.heartbeat())!, last);
});
