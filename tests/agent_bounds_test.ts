/**
 * How many connections of each kind a source may hold open at the target
 * agent at once, whatever it sends: control connections per address, one
 * RAM connection per gang, one device-state connection per guest (a
 * disk-copy connection replaces the one before: agent_connections_test);
 * and what one control connection may hold: requests at once, answers it
 * does not read. Destinations are started but never booted.
 */
import { dirname, join } from "node:path";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { AgentProcess } from "../src/target/agent_process.ts";
import { requestsAtOnce } from "../src/target/agent_control.ts";
import { AgentHost, MAX_CONTROL_PER_ADDRESS } from "../src/target/agent_host.ts";
import { serveAgentHost } from "../src/target/agent.ts";
import { AgentClient } from "../src/target/agent_client.ts";
import type { RemoteTarget } from "../src/target/remote_target.ts";
import { describeMachine } from "../src/target/describe_machine.ts";
import { FrameReader } from "../src/transfer/frame_io.ts";
import { decodeText, FrameType } from "../src/transfer/protocol.ts";
import { AGENT_VERSION, encodeJson } from "../src/target/agent_protocol.ts";
import { delay } from "../src/_delay.ts";
import { errorMessage } from "../src/_errors.ts";
import { eventOf, peakRss, ramHello, smallMachine, sourceLike } from "./_agent_fixtures.ts";
import { fileExists, testImage, uniqueName } from "./qemu_helpers.ts";

const CONTROL_REFUSED = "control connections open, the most one address may";

Deno.test("one address holds a bounded number of control connections at once: one more is refused with the reason", async () => {
  await using agent = await AgentProcess.start();
  const open: RemoteTarget[] = [];
  try {
    for (let i = 0; i < MAX_CONTROL_PER_ADDRESS; i++) open.push(await agent.connect());
    await assertRejects(() => agent.connect(), Error, CONTROL_REFUSED);
    assertEquals((await open[0]!.agent.request("ping")).ok, true, "the open ones are served");

    // The bound is on connections open at once: once one has closed, the next is served.
    await open.pop()!.close();
    const deadline = performance.now() + 10_000;
    for (;;) {
      try {
        open.push(await agent.connect());
        break;
      } catch (error) {
        const refused = errorMessage(error).includes(CONTROL_REFUSED);
        assert(refused && performance.now() < deadline, `not served again: ${errorMessage(error)}`);
        await delay(50);
      }
    }
  } finally {
    for (const target of open) await target.close();
  }
});

Deno.test("a guest's device state comes on one connection at a time: a second is refused and the first carries on", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const name = uniqueName("bound-ds");
  const destinations = await target.prepareDestinations([await sourceLike(name)]);
  // The source's relay opened the guest's device-state connection as the gang was prepared.
  const carried = (e: { event: string; guest?: unknown }) =>
    e.event === "device-state" && e.guest === name;
  assert(await eventOf(agent, carried), "the relay's device-state connection is not carried");
  await assertRejects(
    () => target.agent.openDeviceState(target.token!, name),
    Error,
    `guest "${name}" has a device-state connection open`,
  );
  assertEquals(agent.server.events.filter(carried).length, 1, "the second one is carried");
  const state = await destinations[0]!.state();
  assertEquals([state.alive, state.status], [true, "inmigrate"], "the destination still waits");
  await target.discard(destinations);
});

Deno.test("a gang's RAM comes on one connection at a time: a second is refused and the first one's file stays", async () => {
  await using agent = await AgentProcess.start();
  await using target = await agent.connect();
  const name = uniqueName("bound-ram");
  const destinations = await target.prepareDestinations([await sourceLike(name)]);
  const hello = ramHello(target.token!, name);
  const conns: Deno.Conn[] = [];
  try {
    const first = await target.connect();
    conns.push(first);
    await first.write(hello);
    assertEquals((await new FrameReader(first).next(10_000))?.type, FrameType.Welcome);

    const second = await target.connect();
    conns.push(second);
    await second.write(hello);
    const answer = await new FrameReader(second).next(10_000);
    assertEquals(answer?.type, FrameType.Error, "the second RAM connection is welcomed");
    assertEquals(decodeText(answer!.body), "Refused: the gang's RAM comes on another connection");
    assert(await fileExists(join(agent.dir, name)), "the first connection's RAM file is removed");
  } finally {
    for (const conn of conns) conn.close();
  }
  await target.discard(destinations);
});

Deno.test("a control connection that sends requests without end and reads no answer is closed, and the agent serves others", async () => {
  await using agent = await AgentProcess.start({ insecure: true, args: ["--idle-timeout", "1"] });
  const peakBefore = await peakRss(agent);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.address.port });
  // Requests whose answers (an error quoting the name, about 3 kB) are as large as they are.
  const batch = new Uint8Array(
    Array.from(
      { length: 64 },
      (
        _,
        i,
      ) => [...encodeJson(FrameType.Control, { id: i + 1, op: "state", guest: "x".repeat(3000) })],
    ).flat(),
  );
  const budget = 256 * 2 ** 20;
  let written = 0;
  const flood = (async () => {
    await conn.write(encodeJson(FrameType.Control, { id: 0, op: "hello", version: AGENT_VERSION }));
    try {
      while (written < budget) {
        for (let done = 0; done < batch.length;) done += await conn.write(batch.subarray(done));
        written += batch.length;
      }
      return undefined;
    } catch (error) {
      return error;
    }
  })();
  try {
    // Another source is served meanwhile.
    await using other = await agent.connect();
    assertEquals((await other.agent.request("ping")).ok, true);

    const ended = await flood;
    assert(
      ended instanceof Deno.errors.ConnectionReset || ended instanceof Deno.errors.BrokenPipe,
      `the agent took ${written} bytes of requests whose answers were never read (${ended})`,
    );
    assert(written < 64 * 2 ** 20, `the agent read ${written} bytes of requests before closing`);
    const closed = await eventOf(
      agent,
      (e) => e.event === "failed" && e.connection === "control" && /peer/.test(String(e.error)),
    );
    assert(
      closed,
      `no event says why the connection was closed: ${
        JSON.stringify(agent.server.events.slice(-5))
      }`,
    );
    const grown = await peakRss(agent) - peakBefore;
    assert(grown < 64 * 2 ** 20, `the agent's memory grew by ${grown} bytes`);
    await using next = await agent.connect();
    assertEquals((await next.agent.request("ping")).ok, true, "the agent serves the next source");
  } finally {
    conn.close();
  }
});

Deno.test("one control connection runs a bounded number of requests at once: the next is read once one is answered", async () => {
  await using agent = await AgentProcess.start({ args: ["--max-guests", "1"] });
  await using target = await agent.connect();
  const name = uniqueName("bound-req");
  const destinations = await target.prepareDestinations([await sourceLike(name)]);
  // Requests that wait (the destination never loads), as many as may run, then a ping.
  const answered: string[] = [];
  const waits = Array.from(
    { length: requestsAtOnce(1) },
    () =>
      target.agent.request("run-when-loaded", { guest: name, timeoutMs: 1_000 }, 30_000)
        .then(() => answered.push("run-when-loaded")),
  );
  try {
    await target.agent.request("ping", {}, 30_000);
    answered.push("ping");
    assertEquals(answered[0], "run-when-loaded", "the ping beyond the bound ran at once");
  } finally {
    await Promise.allSettled(waits);
  }
  await target.discard(destinations);
});

/** Polls `value` until it is `expected`, for `timeoutMs` at most; returns the last value. */
async function settlesAt<T>(value: () => T, expected: T, timeoutMs = 20_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  while (value() !== expected && performance.now() < deadline) await delay(50);
  return value();
}

Deno.test("refused device-state and disk-copy connections do not stay with the gang, and one that ends is dropped", async () => {
  // In this process: the test looks into the agent's gang.
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "gangway-adopt-" });
  const runDir = await Deno.makeTempDir({ prefix: "gangway-adopt-run-" });
  const image = await testImage();
  const host = new AgentHost({
    dir,
    runDir,
    // The test image's directory: prepare needs no put.
    imagesDir: dirname(image.kernel),
    maxGuests: 4,
    maxMemoryMiB: 1024,
    qemuBinary: "qemu-system-x86_64",
    handshakeTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
    keepPriority: true, // the test runner's own priority
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const stop = new AbortController();
  const serving = serveAgentHost(listener, host, { signal: stop.signal });
  const adopted = () => host.gang?.adoptedCount ?? 0;
  // The control connection alone (no relay opens device-state connections of its own).
  const client = await AgentClient.connect(
    { hostname: "127.0.0.1", port: listener.addr.port },
    { insecure: true },
  );
  try {
    const [a, b] = [uniqueName("adopt-a"), uniqueName("adopt-b")];
    const prepared = await client.request("prepare", {
      guests: [
        await describeMachine(a, await smallMachine()),
        await describeMachine(b, await smallMachine()),
      ],
    }, 60_000);
    const key = prepared.key as string;
    assert(typeof key === "string", JSON.stringify(prepared));
    const stream = await client.openDeviceState(key, a);
    assertEquals(adopted(), 1, "the accepted device-state connection is not the gang's");

    for (let i = 0; i < 20; i++) {
      await assertRejects(() => client.openDeviceState(key, a), Error, "connection open");
      await assertRejects(() => client.openDeviceState(key, "nope"), Error, "no guest");
      await assertRejects(() => client.openDiskCopy(key, b, 0), Error, "no copied disk");
    }
    assertEquals(adopted(), 1, "refused connections stay with the gang");

    // The source ends a's stream: the gang forgets it.
    stream.close();
    assertEquals(await settlesAt(adopted, 0), 0, "an ended connection stays with the gang");
    // The gang still works: b's device state is carried.
    const next = await client.openDeviceState(key, b);
    assertEquals(adopted(), 1);
    next.close();
    await client.request("discard", { guests: [a, b] }, 30_000);
    assertEquals(host.gang, undefined, "the gang did not end");
  } finally {
    client.close();
    stop.abort();
    await serving;
    await Deno.remove(runDir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});
