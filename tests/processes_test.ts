import { assertEquals } from "./_assert.ts";
import { runChildScript } from "./_fixtures.ts";

Deno.test("isRunning says a live process runs even without --allow-all, which Deno needs for /proc/PID", async () => {
  // A stale-directory sweep in a process run without -A took its own live directory for a dead one's.
  const module = JSON.stringify(new URL("../src/_processes.ts", import.meta.url).href);
  const seen = await runChildScript(
    `import { isRunning } from ${module};
     console.log(JSON.stringify([isRunning(Deno.pid), isRunning(Number(Deno.args[0]))]));`,
    ["--allow-read", "--allow-run"],
    [String(Deno.pid)],
  );
  assertEquals(seen, [true, true]);
});
