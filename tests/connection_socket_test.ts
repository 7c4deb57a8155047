import { assert, assertEquals } from "./_assert.ts";
import { ConnectionSocket, SEND_BUFFER_BYTES } from "../src/native/connection_socket.ts";
import { loopbackPair } from "./_fixtures.ts";

Deno.test("ConnectionSocket finds a connection by its ports, reads the kernel's delivery rate, and lets go once it closes", async () => {
  using conns = await loopbackPair();
  const { near: client, far: server } = conns;
  const [local, peer] = [client.localAddr.port, client.remoteAddr.port];
  assertEquals(
    ConnectionSocket.find(peer, local) !== undefined,
    true,
    "the accepted end, ports swapped",
  );
  assertEquals(ConnectionSocket.find(local, local), undefined, "no connection has those ports");
  const rate = ConnectionSocket.find(local, peer);
  assert(rate, "the connection is found");
  const reading = (async () => {
    const buffer = new Uint8Array(1 << 16);
    while (await server.read(buffer) !== null) { /* drained */ }
  })();
  const data = new Uint8Array(1 << 20);
  for (let i = 0; i < 16; i++) await client.write(data);
  const sample = rate.read();
  assert(sample, "read while the connection lives");
  assert(sample.bytesPerSecond > 0, `a delivery rate after 16 MiB: ${JSON.stringify(sample)}`);
  client.close();
  await reading;
  assertEquals(rate.read(), undefined, "its descriptor is no longer that connection");
});

Deno.test("ConnectionSocket counts the bytes written that the peer has not acknowledged: what a slow link still has to carry", async () => {
  using conns = await loopbackPair();
  const { near: client, far: server } = conns;
  const socket = ConnectionSocket.find(client.localAddr.port, client.remoteAddr.port);
  assert(socket, "the connection is found");
  assertEquals(socket.read()?.unacknowledgedBytes, 0, "nothing written yet");
  socket.deepenSendBuffer();
  // The peer reads nothing: once its receive buffer is full, the rest waits at the sender.
  let written = 0;
  const data = new Uint8Array(4 << 20);
  while (written < data.length) written += await client.write(data.subarray(written));
  const waiting = socket.read()?.unacknowledgedBytes ?? -1;
  assert(waiting > 0 && waiting <= written, `${waiting} of ${written} bytes unacknowledged`);
  const reading = (async () => {
    const buffer = new Uint8Array(1 << 16);
    while (await server.read(buffer) !== null) { /* drained */ }
  })();
  client.close();
  await reading;
});

Deno.test("deepenSendBuffer() gives a connection a fixed, deeper send buffer, never a smaller one, and lets go once it closes", async () => {
  using conns = await loopbackPair();
  const client = conns.near;
  const socket = ConnectionSocket.find(client.localAddr.port, client.remoteAddr.port);
  assert(socket, "the connection is found");
  const size = socket.deepenSendBuffer();
  assert(size !== undefined, "set while the connection lives");
  // The kernel's own sizing may grow the buffer up to tcp_wmem's limit: a host tuned past twice
  // SEND_BUFFER_BYTES keeps it. Otherwise root may go past net.core.wmem_max; the kernel doubles
  // what it is asked.
  const autoLimit = Number(
    (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_wmem")).split(/\s+/)[2],
  );
  if (autoLimit < 2 * SEND_BUFFER_BYTES && Deno.uid() === 0) {
    assertEquals(size, 2 * SEND_BUFFER_BYTES);
  } else if (autoLimit >= 2 * SEND_BUFFER_BYTES) {
    assert(size < 2 * SEND_BUFFER_BYTES, `kept to the kernel's sizing: ${size}`);
  }
  assertEquals(socket.deepenSendBuffer(4096), size, "a smaller buffer is not asked for");
  client.close();
  assertEquals(
    socket.deepenSendBuffer(),
    undefined,
    "its descriptor is no longer that connection",
  );
});

Deno.test({
  name: "deepenSendBuffer() leaves a host tuned for long links to the kernel's own sizing",
  ignore: Deno.uid() !== 0, // a network namespace of its own needs root
  fn: async () => {
    const child = new URL("./send_buffer_child.ts", import.meta.url).pathname;
    const run = async (wmemLimit: number) => {
      const script =
        `ip link set lo up && sysctl -q -w net.ipv4.tcp_wmem="4096 16384 ${wmemLimit}" && ` +
        `exec "$0" run --allow-all "$1"`;
      const out = await new Deno.Command("unshare", {
        args: ["--net", "sh", "-c", script, Deno.execPath(), child],
        stderr: "inherit",
      }).output();
      assert(out.success, `the child failed (tcp_wmem limit ${wmemLimit})`);
      return JSON.parse(new TextDecoder().decode(out.stdout)).size as number;
    };
    // A host whose kernel may grow the buffer past twice SEND_BUFFER_BYTES keeps that; one that may
    // not gets that much.
    assert((await run(4 * SEND_BUFFER_BYTES)) < 2 * SEND_BUFFER_BYTES);
    assertEquals(await run(SEND_BUFFER_BYTES), 2 * SEND_BUFFER_BYTES);
  },
});
