import { assert, assertEquals, assertRejects, assertSameBytes, assertThrows } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { scanGang } from "../src/scan/scan_gang.ts";
import { GangSender, TargetError } from "../src/transfer/sender.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { MIN_BANDWIDTH } from "../src/_bandwidth.ts";
import { roundSize } from "../src/plan/convergence.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { MAX_CONTENTS_PER_PAGE } from "../src/plan/target_contents.ts";
import type { RoundPages } from "../src/plan/round_planner.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { SyntheticGuest } from "../src/synthetic/synthetic_guest.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";
import { ReceiverProcess } from "../src/target/receiver_process.ts";
import { migrateQemuGang } from "../src/gang_migration.ts";
import type { Destination } from "../src/qemu/destination.ts";
import type { QemuGuest } from "../src/qemu/guest.ts";

/** Three guests with holes, zero pages, and contents shared within and across them. */
function makeGuests(): string[] {
  const shared = (i: number) => patternPage(1000 + (i % 7));
  return [0, 1, 2].map((g) =>
    makeRamFile(
      shmPath(`guest${g}`),
      Array.from({ length: 96 }, (_, p) => {
        if (p % 5 === 0) return "hole" as const;
        if (p % 5 === 1) return "zero" as const;
        if (p % 5 === 2) return shared(p);
        return patternPage(g * 1000 + p);
      }),
    )
  );
}

const specs = (paths: string[]) => paths.map((path) => ({ name: path.split("/").at(-1)!, path }));

function assertSameFiles(guests: { name: string; path: string }[], targetDir: string) {
  for (const { name, path } of guests) {
    assertSameBytes(
      readRamFile(`${targetDir}/${name}`),
      readRamFile(path),
      `${name} at the target`,
    );
  }
}

Deno.test("transferGang() makes the target byte-identical, and sparse where the source has zero pages", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    // stopPages below round 1's pages: only the estimate can end the live rounds after it.
    const report = await transferGang(gang, await receiver.connect(), { stopPages: 10 });
    assert(report.verified);
    assert(roundSize(report.rounds[0]!).pagesSent > 10);
    // Nobody writes the files: the estimate after round 1 finds nothing changed, so no round
    // re-reads the gang before the final one.
    assertEquals(report.rounds.map((r) => [r.round, r.final, r.changedAfter?.pages]), [
      [1, false, 0],
      [2, true, undefined],
    ]);
    assertEquals(report.liveRoundsEnded, "converged");
    assertSameFiles(specs(paths), receiver.dir);
    for (const path of paths) {
      using target = RamFile.open(`${receiver.dir}/${path.split("/").at(-1)}`);
      // 96 pages: 19 holes and 20 zero pages at the source, none of them allocated at the target.
      assertEquals(target.stat().blocks, (96 - 39) * (PAGE_SIZE / 512));
    }
    const complete = receiver.events.find((e) => e.event === "complete");
    assert(complete, "the receiver reports the gang complete");
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("a sender's content room shrinks by the contents each round registers at the target", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    await using sender = await GangSender.connect(gang, await receiver.connect());
    const room = sender.contentRoom;
    assertEquals(room, MAX_CONTENTS_PER_PAGE * gang.pages);
    const inFull = ({ pages: p }: { pages: RoundPages }) =>
      p.unique + p.dirtiedIdentical + p.unsentIdentical;
    const round1 = await sender.round();
    assertEquals(sender.contentRoom, room - inFull(round1));
    {
      using ram = RamFile.open(paths[0]!, { write: true });
      ram.write(Uint32Array.of(0, 1), new Uint8Array([...patternPage(71), ...patternPage(72)]));
    }
    const round2 = await sender.round({ final: true });
    assertEquals(inFull(round2), 2);
    assertEquals(sender.contentRoom, room - inFull(round1) - 2);
    assertEquals((await sender.verify()).length, paths.length, "every guest verified");
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("a round's report says where its time went: scan, plan, zstd, link and receiver within its seconds", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    const report = await transferGang(gang, await receiver.connect(), {
      maxRounds: 2,
      compression: "zstd",
    });
    assertEquals(report.rounds.length, 2);
    assertEquals(report.liveRoundsEnded, "round limit");
    for (const { seconds, time } of report.rounds) {
      const parts = [
        time.scanSeconds,
        time.planSeconds,
        time.compressSeconds,
        time.linkWaitSeconds,
        time.receiverWaitSeconds,
      ];
      assert(parts.every((part) => part >= 0), `no negative part: ${parts}`);
      assert(parts.reduce((a, b) => a + b) <= seconds + 1e-6, `${parts} within ${seconds} s`);
      assert(time.scanSeconds > 0, "every round scans");
    }
    assert(report.rounds[0]!.time.compression!.ratio > 0, "round 1 ran zstd on its new pages");
    assert(report.verifySeconds > 0 && report.verifySeconds <= report.pausedSeconds);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("transferGang() of an offline gang sends each distinct content once, plus small references", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    const scan = scanGang(Gang.open(specs(paths)));
    const report = await transferGang(gang, await receiver.connect());
    const { unique, duplicate } = scan.totals;
    const round1 = report.rounds[0]!.pages;
    assertEquals(round1.unique + round1.unsentIdentical, unique);
    assertEquals(round1.sentIdentical, duplicate);
    const overhead = 64 * 1024; // frame headers, handshake, round ends, digests
    assert(
      report.bytesOnWire <= unique * (PAGE_SIZE + 16) + duplicate * 8 + overhead,
      `${report.bytesOnWire} bytes on the wire for ${unique} distinct contents`,
    );
    assert(report.bytesOnWire >= unique * PAGE_SIZE);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("transferGang() with one round moves a gang in one pass, its pages classified as after a preparation scan", async () => {
  const paths = makeGuests();
  await using live = await startReceiver();
  await using onePass = await startReceiver();
  try {
    using gangA = Gang.open(specs(paths), { seed: randomSeed() });
    const withRounds = await transferGang(gangA, await live.connect());
    using gangB = Gang.open(specs(paths), { seed: randomSeed() });
    let paused = 0;
    const report = await transferGang(gangB, await onePass.connect(), {
      maxRounds: 1,
      pause: () => void paused++,
    });
    assertEquals(paused, 1, "the gang is paused before its only round");
    assertEquals(report.rounds.map((r) => [r.round, r.final]), [[1, true]]);
    assertEquals(report.liveRoundsEnded, "none", "one pass: no live round");
    assert(report.verified);
    assertSameFiles(specs(paths), onePass.dir);
    assertEquals(report.rounds[0]!.pages, withRounds.rounds[0]!.pages);
    assert(report.rounds[0]!.pages.unsentIdentical > 0 && report.rounds[0]!.pages.unique > 0);
    assertEquals(report.rounds[0]!.bytesOnWire, withRounds.rounds[0]!.bytesOnWire);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("verify() comes after the final round only, once, and no round comes after that", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    await using sender = await GangSender.connect(gang, await receiver.connect());
    await assertRejects(() => sender.verify(), Error, "verify() needs the final round first");
    await sender.round();
    await assertRejects(() => sender.verify(), Error, "verify() needs the final round first");
    await sender.round({ final: true });
    await assertRejects(() => sender.round(), Error, "round() after the final round");
    await assertRejects(() => sender.finishGuest(0), Error, "finishGuest() after the final round");
    assertEquals((await sender.verify()).length, paths.length);
    await assertRejects(() => sender.verify(), Error, "verify() again: the gang is over");
    assertSameFiles(specs(paths), receiver.dir);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("onePass() is a sender's only step: not after a preparation, and no round after it", async () => {
  const paths = makeGuests();
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    await using prepared = await GangSender.connect(gang, await receiver.connect());
    await prepared.prepare();
    await assertRejects(() => prepared.onePass(), Error, "only step before verify()");
    await using other = await startReceiver(); // the first one is busy with that gang
    using again = Gang.open(specs(paths), { seed: randomSeed() });
    await using sender = await GangSender.connect(again, await other.connect());
    await sender.onePass();
    await assertRejects(() => sender.round(), Error, "round() after onePass()");
    await sender.verify();
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("transferGang() in one pass resumes the guests when the target dies after the pause", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  await using receiver = await ReceiverProcess.start({ dir, args: ["--insecure"] });
  // Made once the receiver runs: a receiver that cannot start leaves no guest file behind.
  const paths = makeGuests();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    const calls: string[] = [];
    await assertRejects(() =>
      transferGang(gang, Deno.connect({ hostname: "127.0.0.1", port: receiver.port }), {
        maxRounds: 1,
        pause: async () => {
          calls.push("pause");
          receiver.process.kill("SIGKILL"); // the target dies with the guests paused
          await receiver.exited;
        },
        resume: () => void calls.push("resume"),
      })
    );
    assertEquals(calls, ["pause", "resume"]);
  } finally {
    await removeFiles(...paths);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reference resolves after the page that first carried its content is overwritten", async () => {
  const x = patternPage(42);
  const a = makeRamFile(shmPath("first"), [x, patternPage(43)]);
  const b = makeRamFile(shmPath("second"), [x, patternPage(44)]);
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs([a, b]), { seed: randomSeed() });
    await using sender = await GangSender.connect(gang, await receiver.connect());
    await sender.prepare();
    const round1 = await sender.round();
    assertEquals(round1.pages.sentIdentical, 1); // b's copy of x
    {
      using ramA = RamFile.open(a, { write: true });
      ramA.write(Uint32Array.of(0), patternPage(45)); // x's first carrier is overwritten...
      using ramB = RamFile.open(b, { write: true });
      ramB.write(Uint32Array.of(1), x); // ...and x appears on a page that did not hold it
    }
    const round2 = await sender.round({ final: true });
    assertEquals(
      round2.pages.sentIdentical,
      1,
      "x is sent as a reference, resolved from b's page 0",
    );
    assertEquals(round2.rematched, 1);
    assertEquals(
      round2.pages.dirtiedIdentical,
      1,
      "a's page 0 held a shared content, then was written",
    );
    await sender.verify();
    assertSameFiles(specs([a, b]), receiver.dir);
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("transferGang() converges and copies exactly while writers dirty the guests", async () => {
  const pages = 4096;
  const guests = [0, 1].map((g) =>
    SyntheticGuest.start(`live${g}`, shmPath(`live${g}`), {
      bytes: pages * PAGE_SIZE,
      fill: (p) => (p % 3 === 0 ? undefined : patternPage(p % 500)),
      pagesPerSecond: 3000,
      mix: { random: 2, copy: 1, zero: 1 },
    })
  );
  await using receiver = await startReceiver();
  try {
    // The guests are written to before the migration starts, however slowly their writers start.
    await Promise.all(guests.map((g) => g.writing));
    using gang = Gang.open(guests.map((g) => ({ name: g.name, path: g.path })), {
      seed: randomSeed(),
    });
    let pauses = 0;
    const ramFinal: (number | undefined)[] = [];
    const report = await transferGang(gang, await receiver.connect(), {
      stopPages: 64,
      maxRounds: 8,
      ramFinal: (guest) => {
        ramFinal.push(guest);
      },
      pause: async () => {
        pauses++;
        for (const g of guests) await g.pause();
      },
      resume: () => guests.forEach((g) => g.resume()),
    });
    assertEquals(pauses, 1);
    assertEquals(ramFinal, [undefined], "the RAM is final once, for the whole gang");
    assert(report.rounds.length >= 2, "at least one live round and the final one");
    assert(
      report.rounds.slice(1).some((r) => r.pages.unique + r.pages.dirtiedIdentical > 0),
      "later rounds resend dirtied pages",
    );
    assert(guests.every((g) => g.paused), "the guests stay paused after a successful migration");
    assertSameFiles(guests, receiver.dir);
  } finally {
    for (const g of guests) await g.stop();
    await removeFiles(...guests.map((g) => g.path));
  }
});

Deno.test("transferGang() finishes guests one at a time, and never copies from a finished guest's changed target pages", async () => {
  const pages = 2048;
  // Every guest holds the same contents at first: references across guests abound.
  const guests = [0, 1, 2].map((g) =>
    SyntheticGuest.start(`alone${g}`, shmPath(`alone${g}`), {
      bytes: pages * PAGE_SIZE,
      fill: (p) => (p % 4 === 0 ? undefined : patternPage(p % 300)),
      pagesPerSecond: 2000,
      mix: { random: 1, copy: 2, zero: 1 },
    })
  );
  await using receiver = await startReceiver();
  const scribble = patternPage(777_777);
  try {
    await Promise.all(guests.map((g) => g.writing));
    using gang = Gang.open(guests.map((g) => ({ name: g.name, path: g.path })), {
      seed: randomSeed(),
    });
    const steps: string[] = [];
    const report = await transferGang(gang, await receiver.connect(), {
      stopPages: 64,
      maxRounds: 6,
      pause: () => {
        steps.push("gang paused");
      },
      pauseGuest: async (g) => {
        steps.push(`pause ${g}`);
        await guests[g]!.pause();
      },
      ramFinal: (g) => {
        steps.push(`final ${g}`);
      },
      guestFinished: async (g) => {
        steps.push(`finished ${g}`);
        // Its switch-over, as a caller does it: the transfer waits for this before going on.
        await Deno.stat(receiver.dir);
        steps.push(`switched ${g}`);
        // As if it ran at the target now: every page of its copy changes.
        using copy = RamFile.open(`${receiver.dir}/${guests[g]!.name}`, { write: true });
        const all = Uint32Array.from({ length: pages }, (_, p) => p);
        copy.write(all, new Uint8Array(pages * PAGE_SIZE).map((_, i) => scribble[i % PAGE_SIZE]!));
      },
      resume: () => guests.forEach((g) => g.resume()),
    });
    assertEquals(steps, [
      ...["pause 0", "final 0", "finished 0", "switched 0"],
      ...["pause 1", "final 1", "finished 1", "switched 1"],
      ...["pause 2", "final 2", "finished 2", "switched 2"],
    ]);
    assert(report.verified);
    assertEquals(report.rounds.filter((r) => r.guest !== undefined).map((r) => r.guest), [0, 1, 2]);
    assertEquals(report.rounds.at(-1)!.final, true);
    assertEquals(report.rounds.at(-1)!.bytesOnWire < 100, true, "the last round only closes");
    // Each finished guest's copy was left to its new owner; nothing of the migration touched it.
    for (const g of guests) {
      const copy = readRamFile(`${receiver.dir}/${g.name}`);
      for (let p = 0; p < pages; p += 97) {
        assertSameBytes(copy.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), scribble, `page ${p}`);
      }
    }
    assert(
      receiver.events.filter((e) => e.event === "guest-verified").length === 3,
      "the receiver verified each guest alone",
    );
  } finally {
    for (const g of guests) await g.stop();
    await removeFiles(...guests.map((g) => g.path));
  }
});

Deno.test("transferGang() keeps to the bandwidth cap", async () => {
  const path = makeRamFile(
    shmPath("capped"),
    Array.from({ length: 1024 }, (_, p) => patternPage(p + 5000)),
  );
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs([path]), { seed: randomSeed() });
    const started = performance.now();
    const report = await transferGang(gang, await receiver.connect(), { maxBandwidth: 2_000_000 });
    const seconds = (performance.now() - started) / 1000;
    // 4 MiB at 2 MB/s takes 2.1 s; allow the first write's head start.
    assert(
      seconds >= 1.5,
      `${report.bytesOnWire} bytes in ${seconds.toFixed(2)} s at a 2 MB/s cap`,
    );
  } finally {
    await removeFiles(path);
  }
});

Deno.test("transferGang() at a low bandwidth cap hears at once that the target gave up", async () => {
  // At the lowest cap taken (16 KiB/s) the 2 MiB of distinct pages book the link for 128 s, a
  // frame of 512 KiB 32 s; the receiver gives up after 3 s of silence, and the sender must not
  // sleep in the pacer until the 128 s are over.
  const path = makeRamFile(shmPath("slow"), Array.from({ length: 512 }, (_, p) => patternPage(p)));
  await using receiver = await startReceiver({ idleTimeoutMs: 3000 });
  try {
    using gang = Gang.open(specs([path]), { seed: randomSeed() });
    const migrating = transferGang(gang, await receiver.connect(), {
      maxBandwidth: MIN_BANDWIDTH,
      compression: "none",
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      migrating.then(() => "completed", (error) => error),
      new Promise((
        resolve,
      ) => (timer = setTimeout(() => resolve("still asleep after 30 s"), 30_000))),
    ]);
    clearTimeout(timer);
    assert(outcome instanceof TargetError, String(outcome));
    assertEquals(
      outcome.message,
      "Target refused: No data for 3 s while waiting for a frame header",
    );
  } finally {
    await removeFiles(path);
  }
});

Deno.test("transferGang() refuses to verify a guest whose file shrank or grew during the migration", async (t) => {
  for (const [label, pages] of [["shrank", 2], ["grew", 6]] as const) {
    await t.step(`a file that ${label}`, async () => {
      const path = makeRamFile(shmPath(label), [1, 2, 3, 4].map((p) => patternPage(p)));
      await using receiver = await startReceiver();
      try {
        using gang = Gang.open(specs([path]), { seed: randomSeed() });
        using ram = RamFile.open(path, { write: true });
        ram.resize(pages * PAGE_SIZE); // after the gang took its size
        const error = await assertRejects(() =>
          transferGang(gang, receiver.connect(), { maxRounds: 1 })
        );
        // A file that shrank is caught as soon as a page past its end is read; one that grew, at the end.
        assertEquals(
          (error as Error).message,
          label === "shrank"
            ? `Cannot read guest RAM "${path}": the file shrank from ${4 * PAGE_SIZE} to ` +
              `${pages * PAGE_SIZE} bytes`
            : `Cannot verify guest "${path.split("/").at(-1)}": its RAM file "${path}" changed ` +
              `size from ${4 * PAGE_SIZE} to ${pages * PAGE_SIZE} bytes during the migration`,
        );
        await receiver.stop();
        assert(
          !receiver.events.some((e) => e.event === "complete"),
          "the target completed nothing",
        );
        // The target heard why (its log says more than a closed connection), with the guest's
        // name where the source's own path was.
        const failed = receiver.events.find((e) => e.event === "failed");
        const named = `<guest "${path.split("/").at(-1)}"'s RAM file>`;
        assertEquals(
          failed && "error" in failed ? failed.error : undefined,
          `Sender gave up: ${(error as Error).message.replaceAll(`"${path}"`, named)}`,
        );
        assert(!failed || !("error" in failed) || !failed.error.includes(path), "the path told");
      } finally {
        await removeFiles(path);
      }
    });
  }
});

Deno.test("transferGang() reports a refused handshake with the target's reason", async () => {
  const path = makeRamFile(shmPath("refused"), [patternPage(1), patternPage(2)]);
  await using receiver = await startReceiver({ token: "0123456789abcdef" });
  try {
    using gang = Gang.open(specs([path]), { seed: randomSeed() });
    await assertRejects(
      async () => transferGang(gang, await receiver.connect(), { token: "guess", maxRounds: 3 }),
      TargetError,
      "Target refused: Gang refused: wrong or missing token",
    );
  } finally {
    await removeFiles(path);
  }
});

Deno.test("migrateQemuGang() removes the destinations it started when the target refuses the gang", async () => {
  const path = makeRamFile(shmPath("refused-qemu"), [patternPage(1), patternPage(2)]);
  await using receiver = await startReceiver({ token: "0123456789abcdef" });
  const discarded: string[] = [];
  const source = {
    name: "vm",
    pid: 0,
    ramBackend: () => Promise.resolve({ id: "mem0", path, size: 2 * PAGE_SIZE, shared: true }),
    status: () => Promise.resolve({ status: "running", running: true }),
    exited: new Promise(() => {}), // it lives on
    pause: () => Promise.reject(new Error("a refused gang is never paused")),
    resume: () => Promise.resolve(),
    // The device-state capabilities are set before the transfer.
    qmp: { execute: () => Promise.resolve({}) },
  } as unknown as QemuGuest;
  const destination = { name: "vm" } as Destination;
  try {
    await assertRejects(
      () =>
        migrateQemuGang([source], {
          prepareDestinations: () => Promise.resolve([destination]),
          connect: () => receiver.connect(),
          token: "guess",
          discard: (destinations) => {
            discarded.push(...destinations.map((d) => d.name));
            return Promise.resolve();
          },
          release: () => Promise.reject(new Error("a refused gang is never released")),
        }, { maxRounds: 3 }),
      TargetError,
      "wrong or missing token",
    );
    assertEquals(discarded, ["vm"], "the target was told to discard the destination");
  } finally {
    await removeFiles(path);
  }
});

/**
 * Two guests of 4096 pages, of which the first gets `written(throttle)`
 * new pages during each live round, once the round has read all of it:
 * the next round finds exactly those changed. With `slowGuests` the
 * throttles it hands out cut the writes.
 */
async function stallingTransfer(throttles?: number[]) {
  const paths = [0, 1].map((g) =>
    makeRamFile(
      shmPath(`stall${g}`),
      Array.from({ length: 4096 }, (_, p) => patternPage(g * 100_000 + p)),
    )
  );
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(specs(paths), { seed: randomSeed() });
    using first = RamFile.open(paths[0]!, { write: true });
    let throttle = 0;
    let paused = false;
    let wroteIn = 0;
    const slowed: number[] = [];
    const report = await transferGang(gang, await receiver.connect(), {
      stopPages: 300,
      onProgress: ({ round, pagesDone }) => {
        if (paused || wroteIn === round || pagesDone <= 4096) return;
        wroteIn = round;
        const count = Math.round(2000 * (1 - throttle));
        const pages = Uint32Array.from({ length: count }, (_, i) => i);
        const data = new Uint8Array(count * PAGE_SIZE);
        for (let i = 0; i < count; i++) data.set(patternPage(round * 10_000 + i), i * PAGE_SIZE);
        first.write(pages, data);
      },
      ...(throttles
        ? {
          slowGuests: () => {
            const next = throttles[slowed.length];
            if (next !== undefined) slowed.push(throttle = next);
            return Promise.resolve(next);
          },
        }
        : {}),
      pause: () => void (paused = true),
    });
    assert(report.verified);
    assertSameFiles(specs(paths), receiver.dir);
    return { report, slowed };
  } finally {
    await removeFiles(...paths);
  }
}

Deno.test("transferGang() slows the guests down when the rounds stall, and goes on while they shrink", async () => {
  const { report, slowed } = await stallingTransfer([0.5, 0.9]);
  assertEquals(slowed, [0.5, 0.9], "slowed after round 3 and round 4, which did not shrink");
  const live = report.rounds.filter((r) => !r.final);
  assertEquals(live.map((r) => r.throttle), [undefined, undefined, undefined, 0.5, 0.9]);
  // Round 5 sent round 4's writes (half), and only a tenth changed during it: the rounds end.
  assertEquals(live.map((r) => r.pages.unique), [8192, 2000, 2000, 2000, 1000]);
  assertEquals(report.rounds.at(-1)!.pages.unique, 200);
  assertEquals(report.liveRoundsEnded, "converged");
});

Deno.test("transferGang() ends stalled rounds when the guests cannot be slowed (or more)", async () => {
  const without = await stallingTransfer();
  assertEquals(without.report.rounds.filter((r) => !r.final).length, 3);
  assertEquals(without.report.rounds.at(-1)!.pages.unique, 2000, "the final round is large");
  assertEquals(without.report.liveRoundsEnded, "stalled");
  const once = await stallingTransfer([0.5]);
  assertEquals(once.slowed, [0.5]);
  assertEquals(once.report.rounds.filter((r) => !r.final).length, 4, "stalled again at 0.5");
  assertEquals(once.report.liveRoundsEnded, "stalled", "and could be slowed no more");
});

Deno.test("transferGang() lets a guest that wrote much while the ones before it finished catch up live before its final round, unless the rounds hit their limit", async () => {
  const pages = 1024;
  for (const maxRounds of [undefined, 2]) {
    const paths = [0, 1].map((g) =>
      makeRamFile(
        shmPath(`catch${g}`),
        Array.from({ length: pages }, (_, p) => patternPage(p + g * pages)),
      )
    );
    await using receiver = await startReceiver();
    try {
      using gang = Gang.open(specs(paths), { seed: randomSeed() });
      const report = await transferGang(gang, await receiver.connect(), {
        maxRounds,
        pause: () => {},
        pauseGuest: (g) => {
          if (g !== 0) return;
          // Guest 1 runs on while guest 0 finishes: three quarters of its pages change, in one
          // block (the estimate, from one page in 61, sees 12 or 13 of its 17 samples changed).
          using ram = RamFile.open(paths[1]!, { write: true });
          const changed = Uint32Array.from({ length: (3 * pages) / 4 }, (_, i) => i + 100);
          ram.write(changed, new Uint8Array(changed.length * PAGE_SIZE).fill(0x5a));
        },
        resume: () => {},
      });
      assert(report.verified);
      assertSameFiles(specs(paths), receiver.dir);
      const rounds = report.rounds.map((r) => [r.final, r.guest, r.caughtUp]);
      if (maxRounds === undefined) {
        // Round 1 was small enough: the rounds converged. Guest 0 changed nothing: no catch-up.
        assertEquals(report.liveRoundsEnded, "converged");
        assertEquals(rounds, [
          [false, undefined, undefined],
          [false, 0, undefined],
          [false, undefined, 1],
          [false, 1, undefined],
          [true, undefined, undefined],
        ]);
        assertEquals(report.rounds[2]!.pages.unique, 1, "the catch-up sends the changed block");
        assertEquals(report.rounds[3]!.pages.unique, 0, "guest 1's final round sends nothing");
      } else {
        assertEquals(report.liveRoundsEnded, "round limit");
        assertEquals(rounds.filter(([, , caughtUp]) => caughtUp !== undefined), []);
        assertEquals(report.rounds[2]!.pages.unique, 1, "guest 1's final round carries its writes");
      }
    } finally {
      await removeFiles(...paths);
    }
  }
});

Deno.test("transferGang() with guests ending one at a time leaves each guest's changes to its own catch-up round", async (t) => {
  const pages = 4096;
  // Of each guest's pages, as round 1 ends: over 2,048 in all and under it a guest; or over 2,048
  // a guest, which a catch-up round of each guest still sends in time (catchUpsSuffice).
  for (const changed of [1500, 3000]) {
    await t.step(`${changed} pages of each guest changed`, async () => {
      const changes = new Uint8Array(changed * PAGE_SIZE);
      for (let p = 0; p < changed; p++) changes.set(patternPage(99_999), p * PAGE_SIZE);
      for (const ending of ["gang", "one at a time", "one at a time, slowable"] as const) {
        const oneAtATime = ending !== "gang";
        const paths = [0, 1].map((g) =>
          makeRamFile(
            shmPath(`share${g}`),
            Array.from({ length: pages }, (_, p) => patternPage(g * pages + p)),
          )
        );
        await using receiver = await startReceiver();
        try {
          using gang = Gang.open(specs(paths), { seed: randomSeed() });
          let written = false;
          const report = await transferGang(gang, await receiver.connect(), {
            maxRounds: 8,
            onProgress: ({ round, pagesDone, pagesTotal }) => {
              if (round !== 1 || pagesDone < pagesTotal || written) return;
              written = true;
              for (const path of paths) {
                using file = RamFile.open(path, { write: true });
                file.write(Uint32Array.from({ length: changed }, (_, p) => p), changes);
              }
            },
            ...(oneAtATime ? { pauseGuest: () => {} } : { pause: () => {} }),
            // Guests that may be slowed: the rounds must be able to stall, so catch-ups do not end them.
            ...(ending === "one at a time, slowable" &&
              { slowGuests: () => Promise.resolve(undefined) }),
          });
          assert(written);
          const estimate = report.rounds[0]!.changedAfter!.pages;
          const most = report.rounds[0]!.changedAfter!.mostInOneGuest;
          assert(most >= estimate / 2 && most < estimate, `${most} of ${estimate} in one guest`);
          if (changed === 1500) {
            assert(estimate > 2048 && estimate <= 2 * 2048, `${estimate} pages estimated changed`);
          } else assert(estimate > 2 * 2048, `${estimate} pages estimated changed`);
          const rounds = report.rounds.map((r) =>
            r.final
              ? "final"
              : r.caughtUp !== undefined
              ? `catch-up ${r.caughtUp}`
              : r.guest !== undefined
              ? `guest ${r.guest}`
              : "live"
          );
          assertEquals(report.liveRoundsEnded, "converged");
          const expected = {
            "gang": ["live", "live", "final"],
            // Each guest's changes went live, in its own round, before its pause.
            "one at a time": ["live", "catch-up 0", "guest 0", "catch-up 1", "guest 1", "final"],
            // Under the old threshold the same; over it, a second round of the gang.
            "one at a time, slowable": changed === 1500
              ? ["live", "catch-up 0", "guest 0", "catch-up 1", "guest 1", "final"]
              : ["live", "live", "guest 0", "guest 1", "final"],
          };
          assertEquals(rounds, expected[ending], ending);
          assertSameFiles(specs(paths), receiver.dir);
        } finally {
          await removeFiles(...paths);
        }
      }
    });
  }
});

Deno.test("transferGang() with checkUnchanged refuses to verify a guest whose file was replaced at its path, or removed, during the migration", async (t) => {
  for (const how of ["replaced", "removed"] as const) {
    await t.step(how, async () => {
      const pages = 256;
      const path = makeRamFile(
        shmPath(`swap-${how}`),
        Array.from({ length: pages }, (_, p) => patternPage(p)),
      );
      await using receiver = await startReceiver();
      try {
        using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
        const error = await assertRejects(() =>
          transferGang(gang, receiver.connect(), {
            maxRounds: 1,
            checkUnchanged: true,
            onProgress: ({ pagesDone, pagesTotal }) => {
              if (pagesDone < pagesTotal) return;
              // The same size, one byte other, renamed over the path (as `mv` and editors do).
              Deno.removeSync(path);
              if (how === "replaced") {
                makeRamFile(`${path}.new`, Array.from({ length: pages }, (_, p) => patternPage(p)));
                const file = Deno.openSync(`${path}.new`, { write: true });
                file.writeSync(new Uint8Array([1]));
                file.close();
                Deno.renameSync(`${path}.new`, path);
              }
            },
          })
        );
        assert(
          (error as Error).message.startsWith(`Cannot verify guest "vm": `) &&
            (error as Error).message.includes(how === "replaced" ? "was replaced" : "removed"),
          (error as Error).message,
        );
        await receiver.stop();
        assert(
          !receiver.events.some((e) => e.event === "complete"),
          "the target completed nothing",
        );
        assert(receiver.events.some((e) => e.event === "failed"), "the target heard of it");
      } finally {
        await removeFiles(path, `${path}.new`);
      }
    });
  }
});

Deno.test("transferGang() refuses options out of range before it sends anything, naming them, and closes the connection", async () => {
  const path = makeRamFile(shmPath("bad-options"), [patternPage(1)]);
  try {
    using gang = Gang.open([{ name: "g", path }], { seed: randomSeed() });
    const bad: [Parameters<typeof transferGang>[2], string][] = [
      [{ maxRounds: 0 }, "maxRounds must be a positive integer"],
      [{ maxRounds: 1.5 }, "maxRounds must be a positive integer"],
      [{ stopPages: -1 }, "stopPages must be a whole number"],
      [{ maxBandwidth: 0 }, "maxBandwidth must be at least 16384 bytes per second"],
      [{ maxBandwidth: 1 }, "maxBandwidth must be at least 16384 bytes per second"],
      [
        { maxBandwidth: "5e6" as unknown as number }, // a string, as JavaScript may pass
        "maxBandwidth must be at least 16384 bytes per second (a frame must reach the target " +
        'within its idle timeout), got "5e6"',
      ],
      [{ deltas: "no" as unknown as boolean }, 'deltas must be true or false, got "no"'],
      // @ts-expect-error: a mode that does not exist, as a script in JavaScript may pass
      [{ compression: "lz4" }, 'compression must be one of auto, zstd, none, got "lz4"'],
      [{ scanThreads: 0 }, "scanThreads: Scan threads must be a positive integer"],
      [{ finalThreads: 2.5 }, "finalThreads: Scan threads must be a positive integer"],
      [{ stallTimeoutMs: 0 }, "stallTimeoutMs must be 1 to"],
      [{ answerTimeoutMs: 3e9 }, "answerTimeoutMs must be 1 to"],
    ];
    for (const [options, message] of bad) {
      let written = 0;
      let closed = false;
      const conn = {
        read: () => Promise.resolve(null),
        write: (data: Uint8Array) => Promise.resolve((written += data.length, data.length)),
        close: () => void (closed = true),
      };
      await assertRejects(() => transferGang(gang, conn, options), RangeError, message);
      assertEquals(written, 0, `nothing sent with ${JSON.stringify(options)}`);
      assert(closed, `the connection is closed with ${JSON.stringify(options)}`);
    }
    assertThrows(
      // @ts-expect-error: a number, as a script in JavaScript may pass
      () => Gang.open([{ name: "g", path }], { seed: 5 }),
      TypeError,
      "The hash seed must be a bigint",
    );
  } finally {
    await removeFiles(path);
  }
});
