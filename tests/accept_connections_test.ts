import { assertEquals } from "./_assert.ts";
import { acceptConnections } from "../src/transfer/accept_connections.ts";

Deno.test("the handshake slots of one host are counted together, whichever of its addresses a peer comes from", async () => {
  // A dual-stack listener: one peer comes from 127.0.0.1 (seen as ::ffff:127.0.0.1), one from ::1.
  const listener = Deno.listen({ hostname: "::", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const abort = new AbortController();
  const givenUp: string[] = [];
  let accepted = 0;
  const { promise: secondIn, resolve: secondArrived } = Promise.withResolvers<void>();
  const serving = acceptConnections(listener, async ({ conn, address, signal }) => {
    if (++accepted === 2) secondArrived();
    assertEquals(address, "loopback");
    await new Promise<void>((resolve) => {
      signal.addEventListener("abort", () => {
        givenUp.push((signal.reason as Error).message);
        resolve();
      }, { once: true });
    });
    conn.close();
  }, { maxPendingPerAddress: 1, signal: abort.signal });
  const peers = [
    await Deno.connect({ hostname: "127.0.0.1", port }),
    await Deno.connect({ hostname: "::1", port }),
  ];
  try {
    await secondIn;
    assertEquals(givenUp, ["Handshake given up: newer connections from loopback needed the slot"]);
  } finally {
    abort.abort();
    for (const peer of peers) peer.close();
    await serving;
  }
});
