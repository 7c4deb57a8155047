import { assert, assertEquals } from "./_assert.ts";
import { ConnectionSocket, SEND_BUFFER_BYTES } from "../src/native/connection_socket.ts";

Deno.test("ConnectionSocket finds a connection by its ports, reads the kernel's delivery rate, and lets go once it closes", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
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
  } finally {
    try {
      client.close();
    } catch {
      // Closed above.
    }
    server.close();
    listener.close();
  }
});

Deno.test("deepenSendBuffer() gives a connection a fixed, deeper send buffer, never a smaller one, and lets go once it closes", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    const socket = ConnectionSocket.find(client.localAddr.port, client.remoteAddr.port);
    assert(socket, "the connection is found");
    const size = socket.deepenSendBuffer();
    assert(size !== undefined, "set while the connection lives");
    if (Deno.uid() === 0) {
      // Root may go past net.core.wmem_max; the kernel doubles what it is asked for.
      assertEquals(size, 2 * SEND_BUFFER_BYTES);
    }
    assertEquals(socket.deepenSendBuffer(4096), size, "a smaller buffer is not asked for");
    client.close();
    assertEquals(
      socket.deepenSendBuffer(),
      undefined,
      "its descriptor is no longer that connection",
    );
  } finally {
    try {
      client.close();
    } catch {
      // Closed above.
    }
    server.close();
    listener.close();
  }
});
