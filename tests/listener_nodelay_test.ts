import { assertEquals } from "./_assert.ts";
import { setListenerNoDelay } from "../src/native/listener_nodelay.ts";
import { makeLabCerts } from "./tls_fixtures.ts";

Deno.test("setListenerNoDelay() finds this process's TCP listeners by port, TLS ones included", async () => {
  await using certs = await makeLabCerts();
  const cert = await Deno.readTextFile(`${certs.dir}/receiver.pem`);
  const key = await Deno.readTextFile(`${certs.dir}/receiver.key`);
  using tls = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  using plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  assertEquals(setListenerNoDelay(tls.addr.port), 1);
  assertEquals(setListenerNoDelay(plain.addr.port), 1);
  // A connection to the listener is no listener: only the listening socket is set.
  using client = await Deno.connect({ hostname: "127.0.0.1", port: plain.addr.port });
  using _accepted = await plain.accept();
  assertEquals(setListenerNoDelay(client.localAddr.port), 0);
  assertEquals(
    setListenerNoDelay(plain.addr.port),
    1,
    "the accepted socket on its port is not counted",
  );
});
