/**
 * One real Debian guest (systemd, Debian's cloud kernel, booted from its
 * own overlay over the shared base disk), migrated by gangway on this
 * machine. The image is built once into the cache (about 100 s, as root);
 * then each run costs one boot under TCG (30-45 s) and the migration.
 */
import { dirname } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { migrateQemuGang } from "../src/gang_migration.ts";
import { ensureGuestImage } from "../src/qemu/guest_image.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import type { Heartbeat } from "../src/qemu/heartbeat.ts";
import { LocalTarget } from "../src/target/local_target.ts";
import { assertContinued, fileExists, Guests, uniqueName } from "./qemu_helpers.ts";

Deno.test("A Debian guest boots from its overlay and migrateQemuGang() moves it, heartbeat going on", async () => {
  const image = await ensureGuestImage({
    name: "debian-cloud",
    onProgress: (line) => console.error(line),
  });
  await using guests = new Guests();
  const source = guests.add(
    await QemuGuest.start({
      name: uniqueName("debian"),
      memoryMiB: 256,
      image,
      workload: { mode: "idle", checkEverySeconds: 1 },
    }),
  );
  const overlay = `${source.ramPath}.qcow2`;
  // Shared storage: the agent's destination opens the source's overlay over the base image.
  await using target = await LocalTarget.start({
    sharedDisks: [dirname(overlay), dirname(image.disk!)],
  });
  assertEquals(source.machine.disks, [{ path: overlay, format: "qcow2", base: image.disk }]);
  await source.waitUntilBooted(240_000);

  let last: Heartbeat | undefined;
  const { report, destinations } = await migrateQemuGang([source], target, {
    beforeSwitchOver: async () => {
      last = await source.heartbeat();
    },
  });
  assertEquals((await destinations[0]!.state()).status, "running");
  const [kept] = await target.remote.keptGuests();
  const destination = await QemuGuest.attach(kept!.qmpPath);
  assert(report.transfer.verified);
  assertEquals(report.guests.map((g) => g.migrated), [true]);
  // Shared storage: the destination writes to the source's overlay; the base stays read-only.
  assertEquals(destination.machine.disks, source.machine.disks);
  await assertContinued(last!, destination);
  assert(await fileExists(overlay), "the overlay outlives the source");
  assertEquals((await Deno.stat(image.disk!)).mode! & 0o222, 0, "the base disk is read-only");
  assertEquals((await destination.status()).running, true);
  await destination.detach();
});
