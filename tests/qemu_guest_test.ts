import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { QmpError } from "../src/qemu/qmp_messages.ts";
import { qemuPidsNamed } from "../src/lab/_processes.ts";
import { fileExists, Guests, testImage, uniqueName } from "./qemu_helpers.ts";

const MiB = 1024 * 1024;

Deno.test("QemuGuest.start() boots a guest whose heartbeat advances and whose RAM QMP finds", async () => {
  await using guests = new Guests();
  const image = await testImage();
  const name = uniqueName("boot");
  const started = performance.now();
  const guest = guests.add(
    await QemuGuest.start({ name, memoryMiB: 128, image, workload: { checkEverySeconds: 1 } }),
  );
  // Under TCG on a busy host the IO-APIC timer check panicked guests at boot.
  assert(guest.machine.kernelArgs.includes("no_timer_check"), `${guest.machine.kernelArgs}`);
  const first = await guest.waitUntilBooted();
  console.log(`booted to the first heartbeat in ${Math.round(performance.now() - started)} ms`);
  const later = await guest.waitForHeartbeat({ after: first.counter + 2 });
  assert(later.checks >= 1, "no checksum check yet");
  assertEquals(later.checksum, "ok");

  assertEquals(await guest.ramBackend(), {
    id: "gangway-ram",
    path: `/dev/shm/gangway-${name}`,
    size: 128 * MiB,
    shared: true,
  });
  assertEquals(await guest.status(), { status: "running", running: true });
  const error = await assertRejects(() => guest.qmp.execute("no-such-command"), QmpError);
  assert(error.message.startsWith(`Cannot run "no-such-command" on guest "${name}": `));

  // Paused, the heartbeat (once a second) stops: none comes in 1.5 s; resumed, it goes on.
  await guest.pause();
  assert(guest.lastStopAt !== undefined);
  const paused = (await guest.heartbeat())!;
  await assertRejects(
    () => guest.waitForHeartbeat({ after: paused.counter, timeoutMs: 1500 }),
    Error,
    "none in 1500 ms",
  );
  await guest.resume();
  await guest.waitForHeartbeat({ after: paused.counter, timeoutMs: 5000 });

  await guest.close({ removeRam: true });
  await guest.close(); // safe twice
  assert(!guest.alive);
  assert(!(await fileExists(guest.ramPath)));
});

Deno.test("QemuGuest.startDestination() replaces a stale RAM file and waits paused behind a command prefix", async () => {
  await using guests = new Guests();
  const image = await testImage();
  const source = guests.add(
    await QemuGuest.start({ name: uniqueName("src"), memoryMiB: 64, image }),
  );
  const runDir = await Deno.makeTempDir({ prefix: "gangway-dest-test-" });
  try {
    // A stale file outside /dev/shm, so that this test can look into it.
    const ramPath = join(runDir, "ram");
    await Deno.writeFile(ramPath, new Uint8Array(4096).fill(0xaa));
    const destination = guests.add(
      await QemuGuest.startDestination(source.machine, {
        name: uniqueName("dst"),
        ramPath,
        runDir,
        // As `ip netns exec NAME` will: a prefix that execs QEMU.
        commandPrefix: ["env", "GANGWAY_TEST=1"],
      }),
    );
    assertEquals(await destination.status(), { status: "inmigrate", running: false });
    assertEquals((await destination.ramBackend()).size, 64 * MiB);
    const head = new Uint8Array(4096);
    using file = await Deno.open(ramPath);
    await file.read(head);
    assert(head.every((b) => b === 0), "the stale content survived");
  } finally {
    await guests.close();
    await Deno.remove(runDir, { recursive: true });
  }
});

Deno.test("QemuGuest.start() refuses an existing RAM file and reports a QEMU that fails", async () => {
  const image = await testImage();
  const runDir = await Deno.makeTempDir({ prefix: "gangway-guest-test-" });
  try {
    const ramPath = join(runDir, "ram");
    await Deno.writeFile(ramPath, new Uint8Array(1));
    await assertRejects(
      () => QemuGuest.start({ name: "vm-taken", memoryMiB: 64, image, ramPath, runDir }),
      Error,
      `Cannot start guest "vm-taken": RAM file "${ramPath}" exists`,
    );
    await assertRejects(
      () =>
        QemuGuest.start({
          name: "vm-bad",
          memoryMiB: 64,
          image,
          ramPath,
          runDir,
          replaceRamFile: true,
          extraArgs: ["-no-such-option"],
        }),
      Error,
      `Cannot start guest "vm-bad": QEMU exited: qemu-system-x86_64: -no-such-option: invalid option`,
    );
    // A lab closing on Ctrl-C aborts its signal: a start under way then spawns nothing.
    const closing = new AbortController();
    closing.abort(new Error("The lab session is closed"));
    const qemus = await qemuPidsNamed("vm-closing");
    await assertRejects(
      () =>
        QemuGuest.start({
          name: "vm-closing",
          memoryMiB: 64,
          image,
          ramPath,
          runDir,
          replaceRamFile: true,
          signal: closing.signal,
        }),
      Error,
      "The lab session is closed",
    );
    assertEquals(await qemuPidsNamed("vm-closing"), qemus, "no QEMU was spawned");
    assert(!(await fileExists(join(runDir, "vm-closing.qemu.log"))), "nor its log made");
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
});
