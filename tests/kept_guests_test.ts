import { assertEquals } from "./_assert.ts";
import { servesQmp } from "../src/target/kept_guests.ts";
import { runChildScript } from "./_fixtures.ts";

Deno.test("servesQmp tells a guest gone from one it cannot see: without --allow-all a live process is not taken for gone", async () => {
  // The agent forgets a guest (and removes its RAM file) only once it is surely gone.
  assertEquals(await servesQmp(Deno.pid, "/nowhere/guest.qmp"), false, "readable, another socket");
  assertEquals(await servesQmp(0, "/nowhere/guest.qmp"), false, "no pid");
  const module = JSON.stringify(new URL("../src/target/kept_guests.ts", import.meta.url).href);
  const seen = await runChildScript(
    `import { servesQmp } from ${module};
     console.log(JSON.stringify(await servesQmp(Number(Deno.args[0]), "/nowhere/guest.qmp") ?? "unknown"));`,
    ["--allow-read", "--allow-run", "--allow-net", "--allow-env", "--allow-ffi"],
    [String(Deno.pid)],
  );
  assertEquals(seen, "unknown");
});
