import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import type { Heartbeat } from "../src/qemu/heartbeat.ts";
import { migrateQemuGang, SwitchOverError } from "../src/gang_migration.ts";
import { LocalTarget } from "../src/target/local_target.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { join } from "node:path";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { assertContinued, fileExists, Guests, testImage, uniqueName } from "./qemu_helpers.ts";

/** Two 128 MiB guests of one image, their workload rewriting memory all along. */
async function bootGang(guests: Guests): Promise<QemuGuest[]> {
  const image = await testImage();
  const sources = await Promise.all([0, 1].map(async (i) =>
    guests.add(
      await QemuGuest.start({
        name: uniqueName(`gang${i}`),
        memoryMiB: 128,
        image,
        workload: { mode: "busy", checkEverySeconds: 1 },
      }),
    )
  ));
  await Promise.all(sources.map((s) => s.waitUntilBooted()));
  return sources;
}

/** Kills the QEMU whose RAM is in this file (a destination dying) and waits for it to go. */
async function killQemuOf(ramPath: string): Promise<void> {
  const { usable } = await findQemus();
  const found = usable.find((q) => q.commandLine.instance.ramPath === ramPath);
  assert(found, `a QEMU runs with its RAM in "${ramPath}"`);
  Deno.kill(found.pid, "SIGKILL");
  for (let tries = 0; (await findQemus()).usable.some((q) => q.pid === found.pid); tries++) {
    assert(tries < 100, `QEMU ${found.pid} did not exit`);
  }
}

/** Asserts that no QEMU runs with its RAM in the target's directory: every destination is gone. */
async function assertNoDestinationLeft(dir: string): Promise<void> {
  const { usable } = await findQemus();
  const left = usable.filter((q) => q.commandLine.instance.ramPath.startsWith(dir));
  assertEquals(left.map((q) => q.commandLine.instance.ramPath), [], "no destination is left");
}

/** Compares two RAM files page run by page run, naming the first difference. */
function assertSameRam(a: string, b: string): void {
  using ramA = RamFile.open(a);
  using ramB = RamFile.open(b);
  assertEquals(ramA.size, ramB.size);
  const pages = 1024;
  const bufA = new Uint8Array(pages * PAGE_SIZE);
  const bufB = new Uint8Array(pages * PAGE_SIZE);
  const hasData = new Uint8Array(pages);
  for (let first = 0; first < ramA.pages; first += pages) {
    const n = Math.min(pages, ramA.pages - first);
    ramA.read(first, n, bufA, hasData);
    ramB.read(first, n, bufB, hasData);
    for (let i = 0; i < n * PAGE_SIZE; i++) {
      if (bufA[i] !== bufB[i]) {
        throw new Error(`"${b}" differs from "${a}" in page ${first + Math.floor(i / PAGE_SIZE)}`);
      }
    }
  }
}

Deno.test("migrateQemuGang() with the gang's ending moves live guests whose heartbeat goes on at the target with good checksums", async () => {
  // Declared first so it is disposed of last, when the guests' RAM files have left its directory.
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const lastBeats = new Map<string, Heartbeat>();
  const { report, destinations } = await migrateQemuGang(sources, target, {
    finalRounds: "gang",
    beforeSwitchOver: async (pairs) => {
      for (const { source, destination } of pairs) {
        assertEquals(
          (await source.status()).running,
          false,
          "the source is paused for the switch-over",
        );
        // The RAM as it was at the stop.
        assertSameRam(source.ramPath, join(target.dir, destination.name));
        lastBeats.set(source.name, (await source.heartbeat())!);
      }
    },
  });
  // Checked through the agent after `cont`.
  for (const destination of destinations) {
    assertEquals((await destination.state()).status, "running");
  }

  assertEquals(report.guests.map((g) => g.migrated), [true, true]);
  assert(report.transfer.verified);
  assert(report.transfer.rounds.length >= 2, "live rounds, then the final one");
  for (const guest of report.guests) {
    assert(guest.downtimeMs > 0 && guest.deviceStateBytes > 0, JSON.stringify(guest));
    assertEquals(guest.ramBytes, 128 * 2 ** 20);
  }
  const kept = await target.remote.keptGuests();
  for (const source of sources) {
    const found = kept.find((k) => k.name === source.name)!;
    assertEquals(found.ramPath, join(target.dir, source.name));
    const destination = await QemuGuest.attach(found.qmpPath);
    try {
      await assertContinued(lastBeats.get(source.name)!, destination);
    } finally {
      await destination.detach();
    }
  }
  for (const source of sources) {
    assert(!source.alive, `the source QEMU of "${source.name}" is gone`);
    assert(
      !(await fileExists(source.ramPath)),
      `the source RAM file of "${source.name}" is removed`,
    );
  }
  // Two guests of one image share kernel and library pages: thousands crossed as references.
  const round1 = report.transfer.rounds[0]!;
  assert(round1.pages.sentIdentical > 2000, JSON.stringify(round1));
  assert(
    report.transfer.bytesOnWire < report.transfer.guestBytes,
    JSON.stringify(report.transfer.rounds),
  );
});

Deno.test("migrateQemuGang() by default ends guest by guest: each switches over alone while the next still runs", async () => {
  // Declared first so it is disposed of last, when the guests' RAM files have left its directory.
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const lastBeats = new Map<string, Heartbeat>();
  let firstFinishedAt = 0;
  const { report, destinations } = await migrateQemuGang(sources, target, {
    onRound: (round) => {
      if (round.guest === 0) firstFinishedAt = performance.now();
    },
    beforeSwitchOver: async (pairs) => {
      assertEquals(pairs.length, 1, "one guest at a time");
      const { source, destination } = pairs[0]!;
      assertEquals((await source.status()).running, false, "the source is paused");
      // Its RAM as it was at its own stop, while the guest after it runs on.
      assertSameRam(source.ramPath, join(target.dir, destination.name));
      lastBeats.set(source.name, (await source.heartbeat())!);
    },
  });
  assertEquals(report.finalRounds, "per-guest");
  assert(firstFinishedAt > 0, "the first guest was finished alone");
  assert(
    sources[1]!.lastStopAt! > firstFinishedAt,
    "the second guest ran on until the first one was finished",
  );
  assertEquals(report.guests.map((g) => g.migrated), [true, true]);
  assert(
    sources[1]!.lastStopAt! > report.guests[0]!.runningAt!,
    "the second guest paused only once the first ran at the target (its page work would delay it)",
  );
  for (const guest of report.guests) {
    const parts = Object.values(guest.downtimeParts!);
    assertEquals(parts.length, 5);
    assert(parts.every((ms) => ms >= 0), JSON.stringify(guest.downtimeParts));
    const sum = parts.reduce((a, b) => a + b, 0);
    assert(Math.abs(sum - guest.downtimeMs) < 1e-6, `the parts make the downtime: ${sum}`);
  }
  assert(report.transfer.verified);
  assertEquals(report.transfer.rounds.filter((r) => r.guest !== undefined).length, 2);
  for (const destination of destinations) {
    assertEquals((await destination.state()).status, "running");
  }
  const kept = await target.remote.keptGuests();
  for (const source of sources) {
    const found = kept.find((k) => k.name === source.name)!;
    const destination = await QemuGuest.attach(found.qmpPath);
    try {
      await assertContinued(lastBeats.get(source.name)!, destination);
    } finally {
      await destination.detach();
    }
    assert(!source.alive, `the source QEMU of "${source.name}" is gone`);
  }
});

Deno.test("migrateQemuGang() with the gang's ending leaves every source running when a destination dies before the switch-over", async () => {
  // Declared first so it is disposed of last, when the guests' RAM files have left its directory.
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  let destinationRams: string[] = [];
  await assertRejects(
    () =>
      migrateQemuGang(sources, target, {
        finalRounds: "gang",
        beforeSwitchOver: async (pairs) => {
          destinationRams = pairs.map((p) => join(target.dir, p.destination.name));
          await killQemuOf(destinationRams[1]!);
        },
      }),
    Error,
    "Cannot switch the gang over: destination",
  );
  for (const source of sources) {
    assertEquals((await source.status()).status, "running", `"${source.name}" runs again`);
    const beat = (await source.heartbeat())!;
    const next = await source.waitForHeartbeat({ after: beat.counter, timeoutMs: 10_000 });
    assert(next.counter > beat.counter, "its heartbeat advances");
    assert(await fileExists(source.ramPath), "its RAM file is still there");
  }
  for (const ram of destinationRams) {
    assert(!(await fileExists(ram)), `destination RAM "${ram}" is removed`);
  }
});

Deno.test("migrateQemuGang() with per-guest final rounds names the guests that moved and those that stayed when a later destination dies", async () => {
  // Declared first so it is disposed of last, when the guests' RAM files have left its directory.
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  let killed = "";
  const steps: string[] = [];
  const error = await assertRejects(
    () =>
      migrateQemuGang(sources, target, {
        finalRounds: "per-guest",
        onStep: (step) => steps.push(step),
        beforeSwitchOver: async (pairs) => {
          if (pairs[0]!.source !== sources[0]) return;
          // The first guest is verified and about to run at the target; the second one's
          // destination dies before that guest pauses.
          const { usable } = await findQemus();
          const other = usable.find((q) =>
            q.commandLine.instance.ramPath.startsWith(target.dir) &&
            q.commandLine.instance.ramPath !== join(target.dir, pairs[0]!.destination.name)
          );
          assert(other, "the second guest's destination runs at the target");
          killed = other.commandLine.instance.ramPath;
          await killQemuOf(killed);
        },
      }),
    SwitchOverError,
  );
  assert(killed !== "", "a destination was killed");
  assertEquals(error.moved, [sources[0]!.name]);
  assertEquals(error.stayed, [sources[1]!.name]);
  assert(
    !steps.includes(`Pausing guest "${sources[1]!.name}" for its final round`),
    `the guest whose destination died is not paused for it: ${steps.join("; ")}`,
  );
  assert(error.message.includes(`${sources[1]!.name} still runs at the source`), error.message);
  assert(error.message.includes(`${sources[0]!.name} runs at the target`), error.message);
  assertEquals(error.result.destinations.length, 1, "the moved guest's destination is kept");
  assertEquals((await error.result.destinations[0]!.state()).status, "running");
  assert(!sources[0]!.alive, "the moved guest's source QEMU is gone");
  const stayed = sources[1]!;
  assertEquals((await stayed.status()).status, "running", "the guest that stayed runs again");
  const beat = (await stayed.heartbeat())!;
  const next = await stayed.waitForHeartbeat({ after: beat.counter, timeoutMs: 10_000 });
  assert(next.counter > beat.counter, "its heartbeat advances");
  assert(await fileExists(stayed.ramPath), "its RAM file is still there");
});

Deno.test("migrateQemuGang() stops when a source QEMU exits during the rounds, and the other guest runs on at the source", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const steps: string[] = [];
  const error = await assertRejects(() =>
    migrateQemuGang(sources, target, {
      onStep: (step) => {
        steps.push(step);
        // A crash while its RAM moves.
        if (step.startsWith("Scanning")) Deno.kill(sources[1]!.pid, "SIGKILL");
      },
    })
  );
  assertEquals(
    (error as Error).message,
    `The QEMU of guest "${sources[1]!.name}" exited during the migration`,
  );
  assert(!sources[1]!.alive);
  assertEquals((await sources[0]!.status()).status, "running", "the other guest runs on");
  assert(await fileExists(sources[0]!.ramPath), "its RAM file is still there");
  await assertNoDestinationLeft(target.dir);
});

Deno.test("migrateQemuGang() stops within a round when a destination QEMU dies while the RAM moves, and every guest runs on at the source", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const rounds: number[] = [];
  let killing: Promise<void> | undefined;
  const error = await assertRejects(() =>
    migrateQemuGang(sources, target, {
      // Round 1 takes many seconds at 2 MB/s: the death must be heard long before it ends.
      maxBandwidth: 2e6,
      onRound: (round) => rounds.push(round.round),
      onStep: (step) => {
        if (step.startsWith("Scanning")) killing = killQemuOf(join(target.dir, sources[1]!.name));
      },
    })
  );
  await killing;
  assert(
    (error as Error).message.startsWith(
      `The destination of guest "${sources[1]!.name}" exited during the migration`,
    ),
    (error as Error).message,
  );
  assertEquals(rounds, [], "no round ended before the migration stopped");
  for (const source of sources) {
    assertEquals((await source.status()).status, "running", `"${source.name}" runs on`);
  }
  await assertNoDestinationLeft(target.dir);
});

Deno.test("migrateQemuGang() with per-guest final rounds names a guest whose source QEMU exited after another moved as lost", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const error = await assertRejects(
    () =>
      migrateQemuGang(sources, target, {
        finalRounds: "per-guest",
        beforeSwitchOver: (pairs) => {
          // The first guest is about to run at the target; the second one crashes.
          if (pairs[0]!.source === sources[0]) Deno.kill(sources[1]!.pid, "SIGKILL");
          return Promise.resolve();
        },
      }),
    SwitchOverError,
  );
  assertEquals(error.moved, [sources[0]!.name]);
  assertEquals(error.stayed, []);
  assertEquals(error.lost, [sources[1]!.name]);
  assert(error.message.includes(`${sources[1]!.name} exited at the source`), error.message);
  assertEquals((await error.result.destinations[0]!.state()).status, "running");
});

Deno.test("migrateQemuGang() refuses a guest that never ran, and a paused guest interrupted before its switch-over stays paused", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const [paused, running] = await bootGang(guests);
  await paused!.pause();
  // Started with -S: QEMU's `prelaunch`, never run.
  const never = guests.add(
    await QemuGuest.start({
      name: uniqueName("gangS"),
      memoryMiB: 128,
      image: await testImage(),
      extraArgs: ["-S"],
    }),
  );
  await assertRejects(
    () => migrateQemuGang([never, running!], target),
    Error,
    `Cannot migrate guest "${never.name}": it is prelaunch; it was started with -S and never ran`,
  );
  assertEquals((await never.status()).status, "prelaunch");
  const interrupt = new AbortController();
  await assertRejects(
    () =>
      migrateQemuGang([paused!, running!], target, {
        signal: interrupt.signal,
        onStep: (step) => {
          // The paused guest's RAM is final at the target, not yet verified: its switch-over
          // starts now, and the connection is cut under its verification.
          if (step.startsWith("Switching over")) interrupt.abort(new Error("Interrupted"));
        },
      }),
    Error,
    "Interrupted",
  );
  // Not `postmigrate`: a guest that moves paused sends its device state only once verified.
  assertEquals((await paused!.status()).status, "paused");
  assertEquals((await running!.status()).status, "running");
  await assertNoDestinationLeft(target.dir);
});

Deno.test("migrateQemuGang() stopped after its last guest's switch-over began has moved the gang, and says the gang's last check did not finish", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  const interrupt = new AbortController();
  const { report, destinations } = await migrateQemuGang(sources, target, {
    signal: interrupt.signal,
    beforeSwitchOver: (pairs) => {
      // The last guest is verified and about to run: too late to stop anything but the gang's
      // own last check.
      if (pairs[0]!.source === sources[1]) interrupt.abort(new Error("Interrupted"));
      return Promise.resolve();
    },
  });
  assertEquals(report.guests.map((g) => g.migrated), [true, true]);
  for (const destination of destinations) {
    assertEquals((await destination.state()).status, "running");
  }
  assertEquals(report.transfer.verified, false, "the gang's digests were not compared");
  assert(report.transfer.rounds.length >= 3, "the rounds it made are reported");
  assert(report.transfer.bytesOnWire > 0);
  // Each guest's own bytes, added up from the rounds: it moved, it cost something.
  assertEquals(report.transfer.guestBytesOnWire.length, 2);
  assert(report.guests.every((g) => g.bytesOnWire > 0), JSON.stringify(report.guests));
});

Deno.test("migrateQemuGang() moves a guest paused before it began paused, and runs the others", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  await sources[1]!.pause();
  const lastBeat = (await sources[1]!.heartbeat())!;
  const { report, destinations } = await migrateQemuGang(sources, target);
  assertEquals(report.guests.map((g) => g.migrated), [true, true]);
  assertEquals(report.guests.map((g) => g.paused), [undefined, true]);
  assert(report.transfer.verified);
  assertEquals((await destinations[0]!.state()).status, "running");
  assertEquals((await destinations[1]!.state()).status, "paused", "as it was at the source");
  assert(sources.every((s) => !s.alive), "both sources are gone");
  // It is the guest itself, paused: `cont` runs it on from where it was.
  const found = (await target.remote.keptGuests()).find((k) => k.name === sources[1]!.name)!;
  const destination = await QemuGuest.attach(found.qmpPath);
  try {
    assertEquals(await destination.heartbeat(), undefined, "no heartbeat while paused");
    await destination.resume();
    await assertContinued(lastBeat, destination);
  } finally {
    await destination.detach();
  }
});

Deno.test("migrateQemuGang() stopped by its signal while a guest is paused for its final round resumes every source it paused", async () => {
  await using target = await LocalTarget.start();
  await using guests = new Guests();
  const sources = await bootGang(guests);
  // A third guest, paused before the migration: it stays paused.
  const image = await testImage();
  const paused = guests.add(
    await QemuGuest.start({ name: uniqueName("gang2"), memoryMiB: 128, image }),
  );
  await paused.waitUntilBooted();
  await paused.pause();
  const interrupt = new AbortController();
  const error = await assertRejects(() =>
    migrateQemuGang([...sources, paused], target, {
      finalRounds: "per-guest",
      signal: interrupt.signal,
      // As Ctrl-C in a script: the first guest is paused now, its final round under way.
      onStep: (step) => {
        if (step.startsWith("Pausing guest")) interrupt.abort(new Error("Interrupted (SIGINT)"));
      },
    })
  );
  assertEquals((error as Error).message, "Interrupted (SIGINT)");
  for (const source of sources) {
    assert(source.alive, `the source QEMU of ${source.name} still runs`);
    assertEquals((await source.status()).status, "running", `${source.name} runs again`);
    const beat = (await source.heartbeat())!;
    const next = await source.waitForHeartbeat({ after: beat.counter, timeoutMs: 10_000 });
    assert(next.counter > beat.counter, "its heartbeat advances");
  }
  assert(paused.alive, "the paused guest's source QEMU still runs");
  assertEquals((await paused.status()).status, "paused", "the paused guest stays paused");
  // No destination is left at the target.
  await assertNoDestinationLeft(target.dir);
});
