import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { waitFor } from "./fault_fixtures.ts";
import { makeLabCerts } from "./tls_fixtures.ts";

const SEND = ["--allow-ffi", "--allow-read", "--allow-net", "--allow-env=GANGWAY_LIB"];

function sendCommand(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...SEND, new URL("../src/cli/send.ts", import.meta.url).href, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test("a sender killed mid-transfer: the receiver discards the partial gang, then takes a new one", async () => {
  await using certs = await makeLabCerts();
  const paths = [0, 1].map((g) =>
    makeRamFile(
      shmPath(`killed${g}`),
      Array.from({ length: 2048 }, (_, p) => patternPage(p + g * 5000)),
    )
  );
  const names = paths.map((p) => p.split("/").at(-1)!);
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await spawnReceiver(dir, certs.receiverArgs);
    const transport = certs.senderArgs(receiver.port);
    // 16 MiB at 4 MB/s: the sender is mid-round when it dies.
    const sender = sendCommand([...transport, "--max-bandwidth", "4M", ...paths]).spawn();
    try {
      await waitFor(() => receiver.events.some((e) => e.event === "accepted"), "the gang");
      // Mid-transfer: the first pages have landed in the target's files.
      await waitFor(
        () => names.some((name) => (Deno.statSync(`${dir}/${name}`).blocks ?? 0) > 0),
        "the first pages at the target",
      );
      sender.kill("SIGKILL");
    } finally {
      await sender.output().catch(() => {});
    }
    await waitFor(
      () => receiver.events.some((e) => e.event === "failed"),
      "the receiver's failure",
    );
    const failed = receiver.events.find((e) => e.event === "failed")!;
    assert(
      /Connection lost|Sender closed the connection|Connection closed in the middle/.test(
        String(failed.error),
      ),
      JSON.stringify(failed),
    );
    assertEquals([...Deno.readDirSync(dir)], [], "the partial gang is gone");
    assert(!receiver.events.some((e) => e.event === "complete"));

    const again = await sendCommand([...transport, "--json", ...paths]).output();
    assertEquals(again.code, 0, new TextDecoder().decode(again.stderr));
    assertEquals(JSON.parse(new TextDecoder().decode(again.stdout)).verified, true);
    for (const [i, path] of paths.entries()) {
      assertSameBytes(readRamFile(`${dir}/${names[i]}`), readRamFile(path), names[i]);
    }
  } finally {
    await removeFiles(...paths);
    await Deno.remove(dir, { recursive: true });
  }
});
