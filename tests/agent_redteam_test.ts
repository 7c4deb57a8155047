/**
 * The target agent attacked: by an authenticated source that is buggy or
 * malicious (oversized answers, answers it never reads, `resume` at the
 * wrong time, files nobody asked for, requests that make the agent read a
 * large file at once), and by what shares its host (a second agent on the
 * same run directory, an operator holding a guest's QMP socket or pausing
 * a guest). Each test states a promise of the agent (docs/agent.md, issue
 * 10); destinations are started but never booted.
 */
import { basename, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { RESUMED_MARK } from "../src/target/agent_gang.ts";
import {
  AGENT_VERSION,
  AgentError,
  encodeJson,
  FrameChannel,
} from "../src/target/agent_protocol.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import type { FileRef } from "../src/target/machine_description.ts";
import { sha256Hex } from "./_fixtures.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { FrameType } from "../src/transfer/protocol.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { QmpClient } from "../src/qemu/qmp.ts";
import { fileExists, testImage, uniqueName } from "./qemu_helpers.ts";
import {
  eventOf,
  peakRss,
  qemusIn,
  ramHello,
  smallMachine,
  sourceLike,
} from "./_agent_fixtures.ts";

/** An `--images` directory holding the test kernel and initrd: prepare needs no `put`. */
async function imagesDir(): Promise<string> {
  const image = await testImage();
  const dir = await Deno.makeTempDir({ prefix: "gangway-rt-images-" });
  await Deno.symlink(image.kernel, join(dir, basename(image.kernel)));
  await Deno.symlink(image.initrd, join(dir, basename(image.initrd)));
  return dir;
}

/** True while the process runs (not a zombie). */
async function processRuns(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function killQuietly(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

Deno.test("an answer too large for a control frame does not crash the agent", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  // The request fits in a control frame; `Unknown request "<op>"` would not, unbounded.
  const op = "x".repeat(2 ** 20 - 64);
  await assertRejects(() => target.agent.request(op, {}, 10_000), AgentError);
  const status = await Promise.race([
    agent.server.exited.then((s) => `exited with code ${s.code}`),
    new Promise<string>((resolve) => setTimeout(() => resolve("runs"), 1_000)),
  ]);
  assertEquals(status, "runs", "the agent survives the request");
  await using next = await agent.connect();
  assertEquals((await next.agent.request("ping")).ok, true);
});

Deno.test("a source that stops reading its answers and falls silent is abandoned after the idle timeout", async () => {
  const images = await imagesDir();
  const agent = await AgentProcess.start({
    insecure: true,
    imagesDir: images,
    args: ["--idle-timeout", "1"],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
  try {
    const channel = new FrameChannel(conn, { maxBody: 2 ** 20, writeTimeoutMs: 10_000 });
    const ask = (request: Record<string, unknown>) =>
      channel.write(encodeJson(FrameType.Control, request));
    await ask({ id: 0, op: "hello", version: AGENT_VERSION });
    assertEquals((await channel.reader.next(10_000))?.type, FrameType.Control);
    const name = uniqueName("rt-quiet");
    await ask({
      id: 1,
      op: "prepare",
      guests: [await describeMachine(name, await smallMachine())],
    });
    const prepared = new TextDecoder().decode((await channel.reader.next(30_000))!.body);
    assert(prepared.includes('"key"'), prepared);

    // Requests whose answers (100 kB each) fill the socket buffers, then silence. On a busy
    // machine the agent may give up before the last of them is written: a broken pipe then.
    for (let id = 2; id < 200; id++) {
      ask({ id, op: "state", guest: "x".repeat(100_000) }).catch(() => {});
    }
    await ask({ id: 200, op: "ping" }).catch(() => {});
    const abandoned = await eventOf(agent, (e) => e.event === "abandoned", 15_000);
    assert(
      abandoned,
      "the gang of a source silent for 14 s past the 1 s idle timeout is abandoned",
    );
    assertEquals(await qemusIn(agent.dir), []);
  } finally {
    conn.close();
    await eventOf(agent, (e) => e.event === "abandoned", 20_000);
    await agent.stop();
    await Deno.remove(images, { recursive: true });
  }
});

Deno.test("resume before the device state arrived does not keep the destination once its source is gone", async () => {
  const images = await imagesDir();
  await using agent = await AgentProcess.start({ imagesDir: images });
  try {
    const name = uniqueName("rt-early");
    const target = await agent.connect();
    await target.prepareDestinations([await sourceLike(name)]);
    // A buggy source: asks to run a destination still waiting for its device state.
    const early = await target.agent.request("run-when-loaded", { guest: name, timeoutMs: 500 });
    assertEquals(early.loaded, false, "a destination without its device state is not started");
    await target.close();
    const abandoned = await eventOf(agent, (e) => e.event === "abandoned", 20_000);
    assertEquals(abandoned?.kept, [], "a destination that never loaded its guest is not kept");
    assertEquals(await qemusIn(agent.dir), []);
    assert(!(await fileExists(join(agent.dir, name))), "its RAM file is removed");
  } finally {
    await agent.stopGuests().catch(() => {});
    await Deno.remove(images, { recursive: true });
  }
});

Deno.test("a second agent on the same run directory does not kill the first agent's destinations", async () => {
  const images = await imagesDir();
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  const first = await AgentProcess.start({ runDir, imagesDir: images });
  const otherDir = `/dev/shm/gangway-rt-${Deno.pid}-second`;
  try {
    await using target = await first.connect();
    const name = uniqueName("rt-twin");
    const [destination] = await target.prepareDestinations([await sourceLike(name)]);
    assertEquals((await destination!.state()).status, "inmigrate");

    // Another agent on the same run directory (/run/gangway-agent is the default) and another --dir.
    const second = await AgentProcess.start({ runDir, dir: otherDir, imagesDir: images })
      .catch(() => undefined); // refusing to start would be a fine answer too
    await second?.stop();

    const state = await destination!.state();
    assertEquals([state.alive, state.status], [true, "inmigrate"], "the first gang's destination");
    assert(await fileExists(join(runDir, "guests", name, `${name}.qmp`)), "its QMP socket");
    // And it can still take its device state (its migration socket is in its run directory).
    assert(
      await fileExists(join(runDir, "guests", name, `${name}.migrate`)),
      "its migration socket",
    );
  } finally {
    await first.stop();
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
    await Deno.remove(otherDir, { recursive: true }).catch(() => {});
    await Deno.remove(images, { recursive: true });
  }
});

Deno.test("an agent starting up never kills nor strips a guest that moved here: paused, or its QMP socket in use", async () => {
  const dir = `/dev/shm/gangway-rt-${Deno.pid}-kept`;
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  await Deno.mkdir(dir, { recursive: true });
  // Guests as an earlier agent of these directories left them after their gangs.
  const image = await testImage();
  const kept = async (name: string) => {
    const guest = await QemuGuest.start({
      name,
      memoryMiB: 128,
      image,
      ramPath: join(dir, name),
      runDir: join(runDir, "guests", name),
    });
    // The agent marks a destination when it starts it (cont): from then on it is a guest.
    await Deno.writeTextFile(join(runDir, "guests", name, RESUMED_MARK), "");
    const pid = guest.pid;
    return { guest, pid, qmp: join(runDir, "guests", name, `${name}.qmp`) };
  };
  const paused = await kept("paused");
  const watched = await kept("watched");
  let operator: QmpClient | undefined;
  let agent: AgentProcess | undefined;
  try {
    await paused.guest.pause(); // the operator paused it
    await paused.guest.detach();
    await watched.guest.detach();
    operator = await QmpClient.connect(watched.qmp); // the operator's own QMP session

    agent = await AgentProcess.start({ dir, runDir });
    for (const { guest, pid, qmp } of [paused, watched]) {
      assert(await processRuns(pid), `guest "${guest.name}" runs on`);
      assert(await fileExists(join(dir, guest.name)), `the RAM file of "${guest.name}" stays`);
      assert(await fileExists(qmp), `the QMP socket of "${guest.name}" stays`);
    }
  } finally {
    await operator?.close();
    await agent?.stop();
    for (const { pid } of [paused, watched]) killQuietly(pid);
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("requests naming a large file do not make the agent read it into memory, once per request", async () => {
  const images = await Deno.makeTempDir({ prefix: "gangway-rt-images-" });
  const size = 256 * 2 ** 20;
  const big = join(images, "big");
  await Deno.writeFile(big, new Uint8Array()); // sparse: costs no disk
  await Deno.truncate(big, size);
  await using agent = await AgentProcess.start({ imagesDir: images });
  try {
    await using target = await agent.connect();
    const ref: FileRef = { name: "big", sha256: "0".repeat(64), size };
    const before = await peakRss(agent);
    const answers = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
      const description = await describeMachine(`rt-big-${i}`, await smallMachine());
      return await target.agent.request("prepare", {
        guests: [{ ...description, kernel: ref, initrd: ref }],
      });
    }));
    assertEquals(answers.map((a) => (a.missing as FileRef[]).length), [1, 1, 1, 1]);
    const grown = (await peakRss(agent)) - before;
    assert(grown < 64 * 2 ** 20, `the agent grew by ${Math.round(grown / 2 ** 20)} MiB`);
  } finally {
    await Deno.remove(images, { recursive: true });
  }
});

Deno.test("the agent takes only the files a prepared gang asked for", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const path = await Deno.makeTempFile({ prefix: "gangway-rt-file-" });
  try {
    const bytes = crypto.getRandomValues(new Uint8Array(4096));
    await Deno.writeFile(path, bytes);
    // Nothing asked for it: an agent that keeps it can be filled up, one file at a time.
    const ref: FileRef = { name: "unasked", sha256: sha256Hex(bytes), size: bytes.length };
    await assertRejects(() => target.agent.sendFile(ref, path), AgentError);
    assertEquals(agent.server.events.filter((e) => e.event === "file"), []);
  } finally {
    await Deno.remove(path);
  }
});

/** True once the agent has read everything the connection `conn` (to the agent at `port`) sent. */
async function readByAgent(conn: Deno.Conn, port: number): Promise<boolean> {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, "0");
  const local = `:${hex(port)}`;
  const remote = `:${hex((conn.localAddr as Deno.NetAddr).port)}`;
  for (const line of (await Deno.readTextFile("/proc/net/tcp")).split("\n")) {
    const [, from, to, , queues] = line.trim().split(/\s+/);
    if (from?.endsWith(local) && to?.endsWith(remote)) return queues!.endsWith(":00000000");
  }
  return false;
}

Deno.test("a RAM connection of a gang that was abandoned meanwhile is refused and makes no file", async () => {
  const images = await imagesDir();
  await using agent = await AgentProcess.start({ insecure: true, imagesDir: images });
  try {
    const name = uniqueName("rt-late");
    const target = await agent.connect();
    await target.prepareDestinations([await sourceLike(name)]);
    const hello = ramHello(target.token!, name);
    const ram = await target.connect();
    try {
      // The RAM connection starts; before its HELLO is whole, the gang is abandoned.
      await ram.write(hello.subarray(0, 8));
      for (let tries = 0; !(await readByAgent(ram, agent.address.port)); tries++) {
        assert(tries < 500, "the agent does not read the RAM connection");
      }
      await target.agent.request("ping"); // and has looked at what it read
      await target.close();
      assert(await eventOf(agent, (e) => e.event === "abandoned", 9_000), "the gang is abandoned");
      await ram.write(hello.subarray(8));
      const answer = await new FrameReader(ram).next(10_000).catch(() => null);
      assert(
        answer?.type !== FrameType.Welcome,
        "the agent welcomes the RAM of a gang that is over",
      );
      assert(
        !(await fileExists(join(agent.dir, name))),
        "a RAM file is made for a gang that is over",
      );
    } finally {
      ram.close();
    }
  } finally {
    await Deno.remove(images, { recursive: true });
  }
});

Deno.test("a disk-copy connection needs the gang's key and a disk its guest copies", async () => {
  const images = await imagesDir();
  await using agent = await AgentProcess.start({ insecure: true, imagesDir: images });
  try {
    const name = uniqueName("rt-nbd");
    await using target = await agent.connect();
    // A guest on shared storage (no disk at all): nothing of it is exported.
    await target.prepareDestinations([await sourceLike(name)]);
    const key = target.token!;
    // A wrong key; a disk it does not copy; a "disk" that is a path.
    const refusals: [string, unknown, string][] = [
      ["0".repeat(64), 0, "wrong or missing key"],
      [key, 0, "has no copied disk 0"],
      [key, "../../etc/passwd", "has no copied disk"],
    ];
    for (const [given, disk, message] of refusals) {
      await assertRejects(
        () => target.agent.openDiskCopy(given, name, disk as number),
        Error,
        message,
      );
    }
    assertEquals(agent.server.events.filter((e) => e.event === "disk-copy"), []);
  } finally {
    await Deno.remove(images, { recursive: true });
  }
});
