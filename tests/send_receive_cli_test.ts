import { assert, assertEquals, assertRejects, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { TargetError } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { SyntheticGuest } from "../src/synthetic/synthetic_guest.ts";
import { runCli, spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { waitFor } from "./fault_fixtures.ts";

const SEND = ["--allow-ffi", "--allow-read", "--allow-net", "--allow-env=GANGWAY_LIB"];

Deno.test("send --json migrates RAM files to receive --once and prints the documented report", async () => {
  const a = makeRamFile(shmPath("a"), [patternPage(1), "hole", patternPage(2), "zero"]);
  const b = makeRamFile(shmPath("b"), [patternPage(2), patternPage(3)]);
  // In /dev/shm, as the README's example: Deno asks for --allow-all to read anything under /dev,
  // and the receiver runs with `deno task receive`'s narrower permissions.
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-target-" });
  try {
    await using receiver = await spawnReceiver(dir, ["--insecure", "--once"]);
    const { code, stdout, stderr } = await runCli("send", [
      "--target",
      `127.0.0.1:${receiver.port}`,
      "--insecure",
      "--json",
      a,
      `vm-b=${b}`, // named on the command line
    ], {
      permissions: SEND,
    });
    assertEquals(code, 0, stderr);
    const report = JSON.parse(stdout);
    assertEquals(Object.keys(report), [
      "guests",
      "rounds",
      "bytesOnWire",
      "guestBytes",
      "seconds",
      "verified",
      "liveRoundsEnded",
    ]);
    assertEquals(report.guests, [
      { name: a.split("/").at(-1), bytes: 4 * PAGE_SIZE },
      { name: "vm-b", bytes: 2 * PAGE_SIZE },
    ]);
    assertEquals(report.guestBytes, 6 * PAGE_SIZE);
    assertEquals(report.verified, true);
    assertEquals(report.liveRoundsEnded, "none", "one pass by default: no live round");
    const round1 = report.rounds[0];
    assertEquals(Object.keys(round1.pages), [
      "zero",
      "unique",
      "dirtiedIdentical",
      "unsentIdentical",
      "sentIdentical",
    ]);
    assertEquals(round1.pages, {
      zero: 2,
      unique: 2,
      dirtiedIdentical: 0,
      unsentIdentical: 1,
      sentIdentical: 1,
    });
    assertEquals(round1.deltas, 0, "no page is similar to another here");
    assertEquals(round1.round, 1);
    assert(round1.bytesOnWire > 3 * PAGE_SIZE && round1.seconds >= 0);
    assertEquals(
      report.bytesOnWire,
      report.rounds.reduce((sum: number, r: { bytesOnWire: number }) => sum + r.bytesOnWire, 0) +
        helloAndDigests(report),
    );
    assertEquals((await receiver.exited()).code, 0);
    assert(receiver.events.some((e) => e.event === "complete"));
    assertSameBytes(readRamFile(`${dir}/${a.split("/").at(-1)}`), readRamFile(a));
    assertSameBytes(readRamFile(`${dir}/vm-b`), readRamFile(b));
  } finally {
    await removeFiles(a, b);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Bytes outside the rounds: the HELLO and the DONE frames. */
function helloAndDigests(
  report: { guests: { name: string }[]; bytesOnWire: number; rounds: { bytesOnWire: number }[] },
) {
  const names = report.guests.reduce((sum, g) => sum + new TextEncoder().encode(g.name).length, 0);
  const hello = 8 + 26 + report.guests.length * 10 + names;
  const done = 8 + report.guests.length * 16;
  return hello + done;
}

Deno.test("send fails with exit code 1 and nothing on stdout when it cannot reach or convince the target", async (t) => {
  const path = makeRamFile(shmPath("a"), [patternPage(1)]);
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await t.step("unreachable target", async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      listener.close(); // nobody listens there now
      const { code, stdout, stderr } = await runCli(
        "send",
        ["--target", `127.0.0.1:${port}`, "--insecure", path],
        { permissions: SEND },
      );
      assertEquals(code, 1);
      assertEquals(stdout, "");
      assert(stderr.includes(`Cannot connect to the target 127.0.0.1:${port}`), stderr);
    });
    await t.step("refused handshake", async () => {
      const right = `${dir}/.right-token`;
      const wrong = `${dir}/.wrong-token`;
      await Deno.writeTextFile(right, "right-token-0123456789\n", { mode: 0o600 });
      await Deno.writeTextFile(wrong, "wrong-token-0123456789\n", { mode: 0o600 });
      await using receiver = await spawnReceiver(dir, ["--insecure", "--token-file", right]);
      const { code, stdout, stderr } = await runCli("send", [
        "--target",
        `127.0.0.1:${receiver.port}`,
        "--insecure",
        "--token-file",
        wrong,
        path,
      ], {
        permissions: SEND,
      });
      assertEquals(code, 1);
      assertEquals(stdout, "");
      assert(stderr.includes("wrong or missing token"), stderr);
    });
    await t.step("bad usage", async () => {
      const { code, stderr } = await runCli("send", [path], { permissions: SEND });
      assertEquals(code, 2);
      assert(stderr.includes("--target is required"), stderr);
    });
    await t.step("a timeout no timer can wait", async () => {
      // 2,200,000 s is over 2^31 ms: the timers fired at once, flooding warnings, and spun.
      const { code, stderr } = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", "--stall-timeout", "2200000", path],
      ], { permissions: SEND });
      assertEquals(code, 2, stderr);
      assert(
        stderr.includes('--stall-timeout takes at most 2147483 seconds (24.8 days), got "2200000"'),
        stderr,
      );
      assert(!stderr.includes("TimeoutOverflowWarning"), stderr);
    });
    await t.step("a guest name the target refuses, before connecting", async () => {
      const hidden = makeRamFile(`${dir}/.hidden`, [patternPage(1)]);
      // Nobody listens on port 9: a send that connected first would fail to connect.
      const { code, stderr } = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", hidden],
      ], { permissions: SEND });
      assertEquals(code, 2, stderr);
      assert(
        stderr.includes(
          `guest name ".hidden" of "${hidden}" is refused: it starts with a dot (reserved for the receiver's own files)`,
        ),
        stderr,
      );
      await Deno.remove(hidden);
    });
    await t.step("two files of one name, until one is named NAME=FILE", async () => {
      const other = makeRamFile(`${dir}/${path.split("/").at(-1)}`, [patternPage(2)]);
      const { code, stderr } = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", path, other],
      ], { permissions: SEND });
      assertEquals(code, 2, stderr);
      assert(
        stderr.includes(`two guests are named "${path.split("/").at(-1)}": name them NAME=FILE`),
        stderr,
      );
      // The same file twice is told as such, not as two names.
      const twice = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", path, path],
      ], { permissions: SEND });
      assertEquals(twice.code, 2, twice.stderr);
      assert(
        twice.stderr.includes(`"${path}" is given twice: a gang takes each file once`),
        twice.stderr,
      );
      // Named apart, it gets as far as connecting (nobody listens on port 9).
      const named = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", path, `other=${other}`],
      ], { permissions: SEND });
      assertEquals(named.code, 1, named.stderr);
      assert(named.stderr.includes("Cannot connect to the target"), named.stderr);
      await Deno.remove(other);
      // A file with "=" in its name, given as it is: the hint says how to name it.
      const equals = makeRamFile(`${dir}/x=y`, [patternPage(3)]);
      const meant = await runCli("send", [
        ...["--target", "127.0.0.1:9", "--insecure", "x=y"],
      ], { permissions: SEND, cwd: dir });
      assertEquals(meant.code, 2, meant.stderr);
      assert(meant.stderr.includes('for the file "x=y" write "./x=y"'), meant.stderr);
      await Deno.remove(equals);
    });
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Two synthetic guests of `pages` pages each whose writers keep running. */
function liveGuests(label: string, pages = 2048): SyntheticGuest[] {
  return [0, 1].map((g) =>
    SyntheticGuest.start(`${label}${g}`, shmPath(`${label}${g}`), {
      bytes: pages * PAGE_SIZE,
      fill: (p) => patternPage(p + g * 10_000),
      pagesPerSecond: 500,
    })
  );
}

Deno.test("a receiver killed in a round fails the migration with a clear error and leaves the guests running", async (t) => {
  for (const when of ["round 1", "the final round"]) {
    await t.step(`killed in ${when}`, async () => {
      const guests = liveGuests("killed");
      // A killed receiver leaves its files behind: each step gets its own directory.
      const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
      try {
        await using receiver = await spawnReceiver(dir, ["--insecure"]);
        using gang = Gang.open(guests.map((g) => ({ name: g.name, path: g.path })), {
          seed: randomSeed(),
        });
        const kill = () => receiver.process.kill("SIGKILL");
        let resumed = 0;
        await assertRejects(
          async () =>
            await transferGang(
              gang,
              await Deno.connect({ hostname: "127.0.0.1", port: receiver.port }),
              {
                // Slow enough that round 1 is still going when the receiver dies.
                maxBandwidth: when === "round 1" ? 4_000_000 : undefined,
                onProgress: (p) => {
                  if (when === "round 1" && p.pagesDone === 1024) kill();
                },
                pause: async () => {
                  for (const g of guests) await g.pause();
                  if (when === "the final round") kill();
                },
                resume: () => {
                  resumed++;
                  guests.forEach((g) => g.resume());
                },
              },
            ),
          TargetError,
        );
        assert(guests.every((g) => !g.paused), "no guest is left paused");
        assertEquals(resumed, when === "round 1" ? 0 : 1);
      } finally {
        for (const g of guests) await g.stop();
        await removeFiles(...guests.map((g) => g.path));
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("send refuses to call a final round verified while something still writes the files", async (t) => {
  for (const rounds of ["3", "1"]) {
    await t.step(`--max-rounds ${rounds}`, async () => {
      // 64 MiB each: reading a guest takes longer than the writers' 10 ms between writes,
      // so pages change between the final round's read and the check's.
      const guests = liveGuests(`written${rounds}-`, 16384);
      const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
      try {
        await using receiver = await spawnReceiver(dir, ["--insecure"]);
        const { code, stdout, stderr } = await runCli("send", [
          ...["--target", `127.0.0.1:${receiver.port}`, "--insecure", "--json"],
          ...["--max-rounds", rounds, ...guests.map((g) => g.path)],
        ], { permissions: SEND });
        assertEquals(code, 1, stderr);
        assertEquals(stdout, "", "no report claims anything");
        assert(
          stderr.includes("changed after the final round read them: something still writes") &&
            guests.some((g) => stderr.includes(`pages of "${g.path.split("/").at(-1)}"`)),
          stderr,
        );
        await waitFor(() => receiver.events.some((e) => e.event === "failed"), "the receiver");
        assert(
          !receiver.events.some((e) => e.event === "complete"),
          "the target completed nothing",
        );
        assertEquals([...Deno.readDirSync(dir)], [], "and discarded the copy");
      } finally {
        for (const g of guests) await g.stop();
        await removeFiles(...guests.map((g) => g.path));
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("send stopped with Ctrl-C (SIGINT) says so and exits 130; the target discards what it received", async () => {
  // 4 MiB of distinct pages at 1 MB/s: seconds of sending, interrupted once it is under way.
  const path = makeRamFile(
    shmPath("interrupted"),
    Array.from({ length: 1024 }, (_, p) => patternPage(p)),
  );
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await spawnReceiver(dir, ["--insecure"]);
    const send = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", ...SEND, new URL("../src/cli/send.ts", import.meta.url).href],
        ...["--target", `127.0.0.1:${receiver.port}`, "--insecure", "--max-bandwidth", "1M", path],
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await waitFor(() => receiver.events.some((e) => e.event === "accepted"), "the gang to start");
    send.kill("SIGINT");
    const { code, stdout, stderr } = await send.output();
    const said = new TextDecoder().decode(stderr);
    assertEquals(code, 130, said);
    assertEquals(new TextDecoder().decode(stdout), "", "no report");
    assert(said.includes("send: SIGINT: stopping"), said);
    assert(
      said.includes("send: Interrupted (SIGINT): the target discards what it received"),
      said,
    );
    await waitFor(() => receiver.events.some((e) => e.event === "failed"), "the receiver");
    assertEquals([...Deno.readDirSync(dir)].filter((e) => !e.name.startsWith(".")), []);
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});
