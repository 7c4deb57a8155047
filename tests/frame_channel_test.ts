/**
 * The agent protocol's FrameChannel against a peer that reads nothing: a
 * write that times out, or a queue that grows past its bound, closes the
 * connection instead of growing the writer's memory.
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { FrameChannel } from "../src/target/agent_protocol.ts";
import { withTimeout } from "../src/_delay.ts";
import { loopbackPair } from "./_fixtures.ts";

/** Reads the peer's side to its end (what was buffered, then the close), within `timeoutMs`. */
async function drainToEnd(conn: Deno.Conn, timeoutMs: number): Promise<void> {
  const buffer = new Uint8Array(1 << 20);
  await withTimeout(
    (async () => {
      try {
        while (await conn.read(buffer) !== null) {
          // Dropped.
        }
      } catch (error) {
        // A reset is an end too.
        if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
      }
    })(),
    timeoutMs,
    () => new Error(`The connection was not closed within ${timeoutMs / 1000} s`),
  );
}

const MiB = 2 ** 20;

Deno.test("FrameChannel closes the connection when a write times out: nothing follows a frame cut short", async () => {
  using conns = await loopbackPair();
  const channel = new FrameChannel(conns.near, { maxBody: MiB, writeTimeoutMs: 300 });
  // Any bytes: the channel does not look into its frames.
  const frame = new Uint8Array(MiB);
  // More than the sockets' buffers hold, and the peer reads nothing.
  const writes = Array.from({ length: 64 }, () => channel.write(frame));
  const first = await Promise.allSettled(writes);
  const failed = first.flatMap((r) => r.status === "rejected" ? [r.reason] : []);
  assert(failed.length > 0, "every write of 64 MiB to a peer that reads nothing succeeded");
  assert(String(failed[0]).includes("The peer took no data for 0.3 s"), String(failed[0]));
  assertEquals(channel.failure?.message, "The peer took no data for 0.3 s");
  assertEquals(channel.queuedBytes, 0, "frames are still queued");
  await assertRejects(() => channel.write(frame), Error);
  await drainToEnd(conns.far, 10_000);
});

Deno.test("FrameChannel closes the connection when more bytes wait for the peer than it may have", async () => {
  using conns = await loopbackPair();
  const most = 4 * MiB;
  const channel = new FrameChannel(conns.near, {
    maxBody: MiB,
    writeTimeoutMs: 60_000,
    maxQueuedBytes: most,
  });
  const frame = new Uint8Array(256 * 1024);
  const writes: Promise<void>[] = [];
  let peak = 0;
  for (let i = 0; i < 4096 && !channel.failure; i++) {
    const write = channel.write(frame);
    write.catch(() => {});
    writes.push(write);
    peak = Math.max(peak, channel.queuedBytes);
  }
  assert(channel.failure, "1 GiB of frames was queued for a peer that reads nothing");
  assert(peak <= most, `${peak} bytes were queued, over the bound of ${most}`);
  assert(
    channel.failure.message.startsWith("The peer reads too slowly:"),
    channel.failure.message,
  );
  await Promise.allSettled(writes);
  assertEquals(channel.queuedBytes, 0);
  await drainToEnd(conns.far, 10_000);
});

Deno.test("FrameChannel takes a frame larger than its bound when nothing waits", async () => {
  using conns = await loopbackPair();
  const channel = new FrameChannel(conns.near, {
    maxBody: MiB,
    writeTimeoutMs: 10_000,
    maxQueuedBytes: 1024,
  });
  const frame = new Uint8Array(4096);
  const reading = conns.far.read(new Uint8Array(8192));
  await channel.write(frame);
  assert(await reading, "nothing arrived");
  assertEquals(channel.failure, undefined);
});
