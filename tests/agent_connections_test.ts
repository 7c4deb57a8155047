/**
 * The target agent's connections other than control, attacked as a broken
 * or hostile peer would: what each connection's events say of it, and
 * the DISK_COPY connections of a gang with a copied disk (one per disk,
 * none once the guest may run). Destinations are started but never booted.
 */
import { basename, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import type { RemoteTarget } from "../src/target/remote_target.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import type { FileRef } from "../src/target/machine_description.ts";
import { sha256Hex } from "./_fixtures.ts";
import { delay, withTimeout } from "../src/_delay.ts";
import { AGENT_VERSION, encodeJson } from "../src/target/agent_protocol.ts";
import {
  FrameType,
  type FrameTypeValue,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  writeHeader,
} from "../src/transfer/protocol.ts";
import { encodeHello } from "../src/transfer/hello_frame.ts";
import { eventOf, qemusIn, smallMachine } from "./_agent_fixtures.ts";
import { fileExists, testImage, uniqueName } from "./qemu_helpers.ts";

/** A raw connection to the agent that sends `frame` first. */
async function connectWith(agent: AgentProcess, frame: Uint8Array): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
  await conn.write(frame);
  return conn;
}

function portOf(conn: Deno.Conn): number {
  return (conn.localAddr as Deno.NetAddr).port;
}

Deno.test("every failure the agent logs names the kind of connection that failed", async () => {
  await using agent = await AgentProcess.start({ insecure: true, args: ["--idle-timeout", "1"] });
  const garbage = new Uint8Array(HEADER_BYTES);
  writeHeader(new DataView(garbage.buffer), 0, 99 as FrameTypeValue, 0, 0);
  const key = { key: "0".repeat(64), guest: "nobody" };
  const conns: [string, Deno.TcpConn][] = [
    // A source that says hello, then nothing: its control connection times out.
    [
      "control",
      await connectWith(
        agent,
        encodeJson(FrameType.Control, { id: 0, op: "hello", version: AGENT_VERSION }),
      ),
    ],
    [
      "RAM",
      await connectWith(
        agent,
        encodeHello({
          version: PROTOCOL_VERSION,
          pageSize: 4096,
          seed: 1n,
          token: "wrong",
          guests: [{ name: "nobody", size: 4096 }],
        }),
      ),
    ],
    ["device state", await connectWith(agent, encodeJson(FrameType.DeviceState, key))],
    ["disk copy", await connectWith(agent, encodeJson(FrameType.DiskCopy, { ...key, disk: 0 }))],
    ["unknown", await connectWith(agent, garbage)],
  ];
  try {
    for (const [kind, conn] of conns) {
      const peer = `127.0.0.1:${portOf(conn)}`;
      const failed = await eventOf(agent, (e) => e.event === "failed" && e.peer === peer, 20_000);
      assert(failed, `no failure of the ${kind} connection ${peer} is logged`);
      assertEquals(failed.connection, kind, `the failure of ${peer}: ${JSON.stringify(failed)}`);
    }
  } finally {
    for (const [, conn] of conns) conn.close();
  }
});

/** An agent with the test kernel, initrd and a small raw base image in its images directory. */
async function agentWithBase(): Promise<
  { agent: AgentProcess; base: FileRef; runDir: string; [Symbol.asyncDispose](): Promise<void> }
> {
  const image = await testImage();
  const images = await Deno.makeTempDir({ prefix: "gangway-rt-images-" });
  const runDir = await Deno.makeTempDir({ prefix: "gangway-rt-run-" });
  const removeDirs = async () => {
    await Deno.remove(images, { recursive: true });
    await Deno.remove(runDir, { recursive: true });
  };
  await Deno.symlink(image.kernel, join(images, basename(image.kernel)));
  await Deno.symlink(image.initrd, join(images, basename(image.initrd)));
  const bytes = crypto.getRandomValues(new Uint8Array(65536));
  await Deno.writeFile(join(images, "base.raw"), bytes);
  const base = { name: "base.raw", sha256: sha256Hex(bytes), size: bytes.length };
  try {
    const agent = await AgentProcess.start({ insecure: true, imagesDir: images, runDir });
    return {
      agent,
      base,
      runDir,
      async [Symbol.asyncDispose]() {
        await agent.stop();
        await removeDirs();
      },
    };
  } catch (error) {
    await removeDirs();
    throw error;
  }
}

/** What the agent left of a guest: its QEMU, its run directory (sockets, logs), its overlays. */
async function leftOf(made: { agent: AgentProcess; runDir: string }, name: string) {
  return {
    qemus: await qemusIn(made.agent.dir),
    runDir: await fileExists(join(made.runDir, "guests", name)),
    disks: await fileExists(join(made.runDir, "disks", name)),
    ram: await fileExists(join(made.agent.dir, name)),
  };
}

const NOTHING_LEFT = { qemus: [], runDir: false, disks: false, ram: false };

/** Prepares a gang of one guest whose disk 0 is copied; returns the gang's key. */
async function prepareCopied(target: RemoteTarget, name: string, base: FileRef): Promise<string> {
  const description = await describeMachine(name, await smallMachine());
  const answer = await target.agent.request("prepare", {
    guests: [{ ...description, disks: [{ copy: true, base }] }],
  }, 60_000);
  assert(typeof answer.key === "string", `prepared: ${JSON.stringify(answer)}`);
  return answer.key;
}

async function readExactly(conn: Deno.Conn, bytes: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(bytes);
  for (let got = 0; got < bytes;) {
    const n = await withTimeout(
      conn.read(buffer.subarray(got)),
      20_000,
      () => new Error("No answer from the NBD server within 20 s"),
    );
    assert(n !== null, "the connection ended in the NBD handshake");
    got += n;
  }
  return buffer;
}

/**
 * Opens an NBD export as a client does, up to its transmission phase
 * (where QEMU's server waits for requests as long as the client likes):
 * fixed newstyle handshake, NBD_OPT_EXPORT_NAME.
 *
 * @returns The export's size in bytes
 */
async function openExport(conn: Deno.Conn, name: string): Promise<bigint> {
  const greeting = await readExactly(conn, 18);
  assertEquals(new TextDecoder().decode(greeting.subarray(0, 16)), "NBDMAGICIHAVEOPT");
  await conn.write(exportNameRequest(name));
  return new DataView((await readExactly(conn, 10)).buffer).getBigUint64(0);
}

/** A client's half of a fixed newstyle NBD handshake that opens export `name` (NBD_OPT_EXPORT_NAME). */
function exportNameRequest(name: string): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const request = new Uint8Array(4 + 16 + nameBytes.length);
  const view = new DataView(request.buffer);
  view.setUint32(0, 3); // NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES
  request.set(new TextEncoder().encode("IHAVEOPT"), 4);
  view.setUint32(12, 1); // NBD_OPT_EXPORT_NAME
  view.setUint32(16, nameBytes.length);
  request.set(nameBytes, 20);
  return request;
}

/** True when the agent closes `conn` within `timeoutMs` (what it sends meanwhile is read and dropped). */
async function closedWithin(conn: Deno.Conn, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  const buffer = new Uint8Array(65536);
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    const n = await withTimeout(conn.read(buffer), left, () => new Error("still open"))
      .catch((error) => error instanceof Deno.errors.ConnectionReset ? null : -1);
    if (n === null) return true;
    if (n === -1) return false;
  }
}

Deno.test("a second disk-copy connection for one disk replaces the first: one writer per disk", async () => {
  await using made = await agentWithBase();
  const conns: Deno.Conn[] = [];
  try {
    await using target = await made.agent.connect();
    const name = uniqueName("rt-twice");
    const key = await prepareCopied(target, name, made.base);
    conns.push(await target.agent.openDiskCopy(key, name, 0));
    assertEquals(await openExport(conns[0]!, "disk0"), 65536n, "the first opens the export");
    conns.push(await target.agent.openDiskCopy(key, name, 0));
    assertEquals(await openExport(conns[1]!, "disk0"), 65536n, "the second opens the export");
    assert(await closedWithin(conns[0]!, 20_000), "the first is not closed in 20 s");
  } finally {
    for (const conn of conns) conn.close();
  }
});

Deno.test("a destination's disk is exported no more once the source asks it to run, even without end-disk-copies", async () => {
  await using made = await agentWithBase();
  let open: Deno.Conn | undefined;
  try {
    await using target = await made.agent.connect();
    const name = uniqueName("rt-export");
    const key = await prepareCopied(target, name, made.base);
    open = await target.agent.openDiskCopy(key, name, 0);
    assertEquals(await openExport(open, "disk0"), 65536n);
    // A buggy source: no end-disk-copies before run-when-loaded (its device state never came).
    const answer = await target.agent.request("run-when-loaded", { guest: name, timeoutMs: 200 });
    assertEquals(answer.loaded, false);
    assert(await closedWithin(open, 20_000), "the disk-copy connection is not closed in 20 s");
    await assertRejects(
      () => target.agent.openDiskCopy(key, name, 0),
      Error,
      `the disk copies of guest "${name}" have ended`,
    );
  } finally {
    open?.close();
  }
});

Deno.test("a source that dies in the middle of a disk write leaves host B clean", async () => {
  await using made = await agentWithBase();
  const name = uniqueName("rt-dies");
  const target = await made.agent.connect();
  let open: Deno.Conn | undefined;
  try {
    const key = await prepareCopied(target, name, made.base);
    open = await target.agent.openDiskCopy(key, name, 0);
    await openExport(open, "disk0");
    // NBD_CMD_WRITE of 64 KiB at offset 0, of which half is sent; the connection stays half-open.
    const write = new Uint8Array(28 + 32768);
    const view = new DataView(write.buffer);
    view.setUint32(0, 0x25609513);
    view.setUint16(6, 1);
    view.setBigUint64(8, 1n);
    view.setBigUint64(16, 0n);
    view.setUint32(24, 65536);
    await open.write(write);
    assertEquals((await leftOf(made, name)).disks, true, "the overlay exists meanwhile");
    await target.close(); // the source dies: its control connection ends
    assert(await eventOf(made.agent, (e) => e.event === "abandoned", 20_000), "not abandoned");
    assert(await closedWithin(open, 20_000), "the disk-copy connection is not closed in 20 s");
    assertEquals(await leftOf(made, name), NOTHING_LEFT);
  } finally {
    open?.close();
    await target.close();
  }
});

Deno.test("NBD garbage on a disk-copy connection ends that connection only: the export serves the next one", async () => {
  await using made = await agentWithBase();
  await using target = await made.agent.connect();
  const name = uniqueName("rt-garbage");
  const key = await prepareCopied(target, name, made.base);
  const garbage = await target.agent.openDiskCopy(key, name, 0);
  try {
    await readExactly(garbage, 18); // the greeting
    await garbage.write(crypto.getRandomValues(new Uint8Array(4096))).catch(() => 0);
    assert(await closedWithin(garbage, 20_000), "the NBD server does not close it in 20 s");
  } finally {
    garbage.close();
  }
  const next = await target.agent.openDiskCopy(key, name, 0);
  try {
    assertEquals(await openExport(next, "disk0"), 65536n);
  } finally {
    next.close();
  }
  const state = await target.agent.request("state", { guest: name });
  assertEquals((state.state as { status: string }).status, "inmigrate");
});

Deno.test("a disk-copy hello sent a byte at a time holds its connection no longer than the handshake timeout", async () => {
  await using agent = await AgentProcess.start({
    insecure: true,
    args: ["--handshake-timeout", "1"],
  });
  const hello = encodeJson(FrameType.DiskCopy, { key: "0".repeat(64), guest: "g", disk: 0 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
  const peer = `127.0.0.1:${portOf(conn)}`;
  try {
    // Its header at once (it says what the connection is), then a byte of its body every 100 ms:
    // the hello would take several seconds; the agent gives up after 1 s.
    await conn.write(hello.subarray(0, HEADER_BYTES));
    let sent = HEADER_BYTES;
    while (sent < hello.length - 1 && !agent.server.events.some((e) => e.peer === peer)) {
      if ((await conn.write(hello.subarray(sent, sent + 1)).catch(() => 0)) === 0) break;
      sent++;
      await delay(100);
    }
    const failed = await eventOf(agent, (e) => e.event === "failed" && e.peer === peer, 20_000);
    assert(failed, "the slow connection is never given up");
    assertEquals(failed.connection, "disk copy");
    assert(String(failed.error).includes("No handshake within 1 s"), String(failed.error));
    assert(sent < hello.length - 1, "the whole hello went through before the timeout");
    assert(await closedWithin(conn, 20_000), "the slow connection is not closed");
  } finally {
    conn.close();
  }
});

Deno.test("stream bytes sent together with a disk-copy hello reach the NBD server, none dropped", async () => {
  await using made = await agentWithBase();
  await using target = await made.agent.connect();
  const name = uniqueName("rt-early");
  const key = await prepareCopied(target, name, made.base);
  // The hello and, in the same write, the client's half of the NBD handshake (a client may send
  // it before the server's greeting: it is read after the greeting goes out).
  const hello = encodeJson(FrameType.DiskCopy, { key, guest: name, disk: 0 });
  const options = exportNameRequest("disk0");
  const together = new Uint8Array(hello.length + options.length);
  together.set(hello);
  together.set(options, hello.length);
  const conn = await connectWith(made.agent, together);
  try {
    const header = await readExactly(conn, HEADER_BYTES);
    assertEquals(header[0], FrameType.DiskCopy, "the agent's answer");
    await readExactly(conn, new DataView(header.buffer).getUint32(4, true));
    const greeting = await readExactly(conn, 18);
    assertEquals(new TextDecoder().decode(greeting.subarray(0, 16)), "NBDMAGICIHAVEOPT");
    const info = await readExactly(conn, 10);
    assertEquals(new DataView(info.buffer).getBigUint64(0), 65536n, "the export's size");
  } finally {
    conn.close();
  }
});

Deno.test("run-when-loaded asked while end-disk-copies is under way waits until the exports have ended", async () => {
  await using made = await agentWithBase();
  const source = await made.agent.connect();
  try {
    const name = uniqueName("rt-racing");
    await prepareCopied(source, name, made.base);
    // Both at once, as a source that does not wait for the first answer sends them.
    const order: string[] = [];
    const ended = source.agent.request("end-disk-copies", { guest: name })
      .then(() => order.push("end-disk-copies"));
    const ran = source.agent.request("run-when-loaded", { guest: name, timeoutMs: 1 })
      .then(() => order.push("run-when-loaded"));
    await Promise.all([ended, ran]);
    assertEquals(order, ["end-disk-copies", "run-when-loaded"]);
  } finally {
    await source.close();
  }
});
