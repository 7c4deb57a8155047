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

/** Starts `sh` (as `prefix` says) with a QMP socket in its command line, as a QEMU has it. */
async function namingSocket(prefix: string[], qmpPath: string): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(prefix[0] ?? "sh", {
    args: [
      ...prefix.slice(1),
      ...(prefix.length ? ["sh"] : []),
      "-c",
      "sleep 60; true",
      "-qmp",
      `unix:${qmpPath},server=on`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Until it has exec'd sh (setpriv first): its command line is what is read.
  const deadline = Date.now() + 10_000;
  while (!(await Deno.readTextFile(`/proc/${child.pid}/cmdline`)).split("\0")[0]!.endsWith("sh")) {
    if (Date.now() > deadline) throw new Error("The child did not start sh");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return child;
}

Deno.test({
  name:
    "servesQmp takes only the agent's own user's process for a guest's QEMU: another user's naming the socket is not one",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    // A process of another user naming a guest's socket was taken for the guest: the agent then
    // removed the RAM file its command line named, as root, once it exited.
    const qmpPath = "/nowhere/guest.qmp";
    const own = await namingSocket([], qmpPath);
    const other = await namingSocket(
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
      qmpPath,
    );
    try {
      assertEquals(await servesQmp(own.pid, qmpPath), true);
      assertEquals(await servesQmp(other.pid, qmpPath), false);
    } finally {
      for (const child of [own, other]) {
        child.kill("SIGKILL");
        await child.status;
      }
    }
  },
});
