/**
 * No shared storage: one Debian guest writing a file a second to its own
 * disk is moved to a target agent whose files are its own (a private mount
 * namespace: its /run, /tmp and /dev/shm are not this host's). The agent
 * makes a fresh overlay over the base image it finds by hash in its images
 * directory, the source mirrors the guest's overlay into it through the
 * agent's port, and after the switch-over the guest at the target reads
 * back, from its disk with the page cache dropped, files it wrote at the
 * source during the migration: their checksums must be the ones written.
 * Costs one boot under TCG (30-45 s) and the migration.
 */
import { dirname, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { migrateQemuGang } from "../src/gang_migration.ts";
import { ensureGuestImage } from "../src/qemu/guest_image.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import type { Heartbeat } from "../src/qemu/heartbeat.ts";
import { LocalTarget } from "../src/target/local_target.ts";
import { type AgentCredentials, makeAgentCredentials } from "../src/target/agent_process.ts";
import type { GuestImage } from "../src/qemu/guest_image.ts";
import { privateHostPrefix } from "../src/lab/target_host.ts";
import { sha256Hex } from "./_fixtures.ts";
import { delay } from "../src/_delay.ts";
import { assertContinued, fileExists, Guests, testImage, uniqueName } from "./qemu_helpers.ts";

/** The disk writer's lines: `gangway-disk wrote|read N MD5`, by file number. */
function diskLines(log: string, kind: "wrote" | "read"): Map<number, string> {
  const found = new Map<number, string>();
  for (const match of log.matchAll(new RegExp(`gangway-disk ${kind} (\\d+) ([0-9a-f]{32})`, "g"))) {
    found.set(Number(match[1]), match[2]!);
  }
  return found;
}

/** Polls a log until `accept` finds what it wants in it, or fails after `timeoutMs`. */
async function waitInLog<T>(
  path: string,
  accept: (log: string) => T | undefined,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const log = await Deno.readTextFile(path).catch(() => "");
    const found = accept(log);
    if (found !== undefined) return found;
    assert(performance.now() < deadline, `No ${what} in ${path} after ${timeoutMs / 1000} s`);
    await delay(500);
  }
}

Deno.test("A guest's disk writes during the migration are on its copied disk at the target", async () => {
  const image = await ensureGuestImage({
    name: "debian-cloud",
    onProgress: (line) => console.error(line),
  });
  // Host B: its own /run, /tmp and /dev/shm (the same network: loopback). It shares no
  // storage with A; its images directory is the image cache, where it finds the base by hash.
  const credentials = await makeAgentCredentials("127.0.0.1");
  try {
    await moveWritingGuest(image, credentials);
  } finally {
    await Deno.remove(credentials.dir, { recursive: true }).catch(() => {});
  }
});

async function moveWritingGuest(image: GuestImage, credentials: AgentCredentials): Promise<void> {
  await using guests = new Guests();
  const source = guests.add(
    await QemuGuest.start({
      name: uniqueName("copied"),
      memoryMiB: 256,
      image,
      workload: { mode: "disk", checkEverySeconds: 1 },
    }),
  );
  await using target = await LocalTarget.start({
    credentials,
    dir: "/dev/shm/gangway",
    runDir: "/run/gangway-agent",
    imagesDir: dirname(dirname(image.disk!)),
    commandPrefix: privateHostPrefix(null, credentials.dir),
    copyDisks: true,
  });
  await source.waitUntilBooted(240_000);
  const before = await waitInLog(
    source.serialLog,
    (log) =>
      diskLines(log, "wrote").size > 0 ? Math.max(...diskLines(log, "wrote").keys()) : undefined,
    120_000,
    "file written by the guest",
  );

  let last: Heartbeat | undefined;
  let wrote = new Map<number, string>();
  const steps: string[] = [];
  const { report } = await migrateQemuGang([source], target, {
    onStep: (step) => steps.push(step),
    beforeSwitchOver: async () => {
      last = await source.heartbeat();
      wrote = diskLines(await Deno.readTextFile(source.serialLog), "wrote");
    },
  });
  assertEquals(report.guests.map((g) => g.migrated), [true]);
  assertEquals(report.finalRounds, "gang", "copied disks end as a gang by default");
  assert(steps.includes("Completing the disk copies"), steps.join(", "));
  const atSwitchOver = Math.max(...wrote.keys());
  assert(atSwitchOver >= before + 2, `the guest wrote ${atSwitchOver - before} files meanwhile`);

  // B's files, seen as its operator sees them: through its processes' root.
  const bRoot = `/proc/${target.agent.server.process.pid}/root`;
  const [kept] = await target.remote.keptGuests();
  const destination = await QemuGuest.attach(join(bRoot, kept!.qmpPath), { root: bRoot });
  try {
    await assertContinued(last!, destination);
    // Read back at B from B's disk: a file written at A during the migration.
    const [number, sum] = await waitInLog(
      destination.serialLog,
      (log) => [...diskLines(log, "read")].find(([n]) => n > before && n <= atSwitchOver),
      60_000,
      "file written during the migration read back",
    );
    assertEquals(sum, wrote.get(number), `file ${number} read back at the target`);
    const readAtB = diskLines(await Deno.readTextFile(destination.serialLog), "read");
    for (const [n, readSum] of readAtB) {
      if (wrote.has(n)) assertEquals(readSum, wrote.get(n), `file ${n} read back at the target`);
    }
    // B's overlay is its own file, in B's private /run; A has no such file.
    const overlay = `/run/gangway-agent/disks/${source.name}/disk0.qcow2`;
    assert(await fileExists(join(bRoot, overlay)), "B has its own overlay");
    assert(!(await fileExists(overlay)), "A does not see B's overlay");
    assertEquals(destination.machine.disks?.[0]?.path, overlay);
    assertEquals(destination.machine.disks?.[0]?.base, image.disk);
  } finally {
    await destination.detach();
  }
}

Deno.test("A disk copy that fails leaves the guest running at the source and nothing at the target; the next one moves the disk", async () => {
  // A busybox guest (quick to boot) with a small disk over a base that only host A has.
  const dir = await Deno.makeTempDir({ prefix: "gw-copy-" });
  const base = join(dir, "base.raw");
  const content = new Uint8Array(16 * 2 ** 20);
  content.set(crypto.getRandomValues(new Uint8Array(65536)));
  await Deno.writeFile(base, content);
  const credentials = await makeAgentCredentials("127.0.0.1");
  try {
    await using guests = new Guests();
    const source = guests.add(
      await QemuGuest.start({
        name: uniqueName("copyfail"),
        memoryMiB: 128,
        image: { ...await testImage(), disk: base },
      }),
    );
    await using target = await LocalTarget.start({
      credentials,
      dir: "/dev/shm/gangway",
      runDir: "/run/gangway-agent",
      commandPrefix: privateHostPrefix(null, credentials.dir),
      copyDisks: true,
    });
    const bRoot = `/proc/${target.agent.server.process.pid}/root`;
    await source.waitUntilBooted();
    // The mirror fails once the RAM starts to move (as when the link to B breaks).
    await assertRejects(
      () =>
        migrateQemuGang([source], target, {
          onStep: (step) => {
            if (step !== "Scanning and sending the gang's RAM") return;
            source.qmp.execute("block-job-cancel", { device: "gangway-mirror-0", force: true })
              .catch(() => {});
          },
        }),
      Error,
      "Cannot copy the disks",
    );
    assertEquals((await source.status()).running, true);
    assertEquals(await target.remote.keptGuests(), []);
    assert(!(await fileExists(join(bRoot, "/run/gangway-agent/disks", source.name))));
    assert(!(await fileExists(join(bRoot, "/dev/shm/gangway", source.name))));
    // The base crossed once, into B's files, checked against its hash.
    const files = await Array.fromAsync(Deno.readDir(join(bRoot, "/run/gangway-agent/files")));
    assert(files.some((f) => f.name === sha256Hex(content)), "the base is in B's files");

    // A block written at A before the migration is at B after it (the guest does not
    // use this disk: it is written under it, through QEMU).
    const write = 'qemu-io disk0 "write -P 0x5a 1M 64k"';
    await source.qmp.execute("human-monitor-command", { "command-line": write });
    const { report } = await migrateQemuGang([source], target);
    assertEquals(report.guests.map((g) => g.migrated), [true]);
    const sent = target.agent.server.events.filter((e) =>
      e.event === "file" && e.sha256 === sha256Hex(content)
    );
    assertEquals(sent.length, 1, "the base crossed once for both migrations");
    const [kept] = await target.remote.keptGuests();
    const destination = await QemuGuest.attach(join(bRoot, kept!.qmpPath), { root: bRoot });
    try {
      // Flushed, then read from B's overlay itself (its own cluster: no base needed).
      await destination.qmp.execute("human-monitor-command", {
        "command-line": 'qemu-io disk0 "flush"',
      });
      const overlay = join(bRoot, `/run/gangway-agent/disks/${source.name}/disk0.qcow2`);
      const image = { driver: "qcow2", file: { driver: "file", filename: overlay }, backing: null };
      const read = await new Deno.Command("qemu-io", {
        args: ["-r", "-U", "-c", "read -P 0x5a 1M 64k", `json:${JSON.stringify(image)}`],
      }).output();
      const said = new TextDecoder().decode(read.stdout) + new TextDecoder().decode(read.stderr);
      assert(read.success && said.includes("read 65536/65536 bytes"), said);
    } finally {
      await destination.detach();
    }
  } finally {
    await Deno.remove(credentials.dir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
