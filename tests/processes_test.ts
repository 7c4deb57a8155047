import { assertEquals } from "./_assert.ts";

Deno.test("isRunning says a live process runs even without --allow-all, which Deno needs for /proc/PID", async () => {
  // A stale-directory sweep in a process run without -A took its own live directory for a dead one's.
  const code = `
    import { isRunning } from ${
    JSON.stringify(new URL("../src/_processes.ts", import.meta.url).href)
  };
    console.log(JSON.stringify([isRunning(Deno.pid), isRunning(Number(Deno.args[0]))]));`;
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-run",
      `data:application/typescript,${encodeURIComponent(code)}`,
      String(Deno.pid),
    ],
  }).output();
  assertEquals(success, true, new TextDecoder().decode(stderr));
  assertEquals(JSON.parse(new TextDecoder().decode(stdout)), [true, true]);
});
