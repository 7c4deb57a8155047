import { assert, assertEquals } from "./_assert.ts";
import { runCli } from "./_cli.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";
import { waitFor } from "./fault_fixtures.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { JOURNAL_NAME } from "../src/transfer/receive_journal.ts";
import { RECEIVE_PERMISSIONS } from "../src/target/receiver_process.ts";

const RECEIVE = [...RECEIVE_PERMISSIONS];
const SEND = ["--allow-ffi", "--allow-read", "--allow-net", "--allow-env=GANGWAY_LIB"];
const ROOT = new URL("../", import.meta.url);

/** A `receive --json` child whose events (stdout) and log lines (stderr) are both kept. */
interface Receiver extends AsyncDisposable {
  process: Deno.ChildProcess;
  port: number;
  events: Record<string, unknown>[];
  lines: string[];
  status: Promise<Deno.CommandStatus>;
}

async function startReceiver(dir: string): Promise<Receiver> {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...RECEIVE,
      new URL("src/cli/receive.ts", ROOT).href,
      ...["--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--json"],
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const events: Record<string, unknown>[] = [];
  const lines: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>, each: (line: string) => void) => {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const got = (rest + text).split("\n");
      rest = got.pop()!;
      got.forEach(each);
    }
  };
  const reading = Promise.all([
    collect(process.stdout, (line) => events.push(JSON.parse(line))),
    collect(process.stderr, (line) => lines.push(line)),
  ]);
  const status = process.status.then(async (s) => (await reading, s));
  let ended = false;
  status.then(() => (ended = true));
  await waitFor(() => ended || events.some((e) => e.event === "listening"), "listening");
  const listening = events.find((e) => e.event === "listening");
  if (!listening) throw new Error(`receive did not start: ${lines.join("\n")}`);
  return {
    process,
    port: Number(String(listening.address).split(":").at(-1)),
    events,
    lines,
    status,
    async [Symbol.asyncDispose]() {
      try {
        process.kill("SIGKILL");
      } catch {
        // Ended already.
      }
      await status;
    },
  };
}

/** A slow `send` of `paths` (64 KB/s: seconds for a few hundred KiB), running until awaited. */
function slowSend(port: number, paths: string[]) {
  return runCli("send", [
    ...["--target", `127.0.0.1:${port}`, "--insecure", "--max-bandwidth", "64k", ...paths],
  ], { permissions: SEND });
}

/** Two guests of 256 KiB of distinct pages. */
function guests(label: string): string[] {
  return [0, 1].map((g) =>
    makeRamFile(
      shmPath(`${label}${g}`),
      Array.from({ length: 64 }, (_, p) => patternPage(p + g * 100)),
    )
  );
}

const names = (paths: string[]) => paths.map((p) => p.split("/").at(-1)!);

Deno.test("receive stops after the gang in progress on a first signal, abandons it on a second", async (t) => {
  for (const signals of [["SIGTERM"], ["SIGINT", "SIGINT"]] as const) {
    await t.step(signals.join(", then "), async () => {
      const paths = guests("signalled");
      const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
      try {
        await using receiver = await startReceiver(dir);
        const sent = slowSend(receiver.port, paths);
        await waitFor(() => receiver.events.some((e) => e.event === "accepted"), "the gang");
        const stopping = () => receiver.events.filter((e) => e.event === "stopping").length;
        for (const [i, signal] of signals.entries()) {
          receiver.process.kill(signal);
          await waitFor(() => stopping() === i + 1, "the stopping line");
        }
        const [status, send] = await Promise.all([receiver.status, sent]);
        const peer = receiver.events.find((e) => e.event === "accepted")!.peer;
        assert(
          receiver.lines.includes(
            `receive: stopping after the gang from ${peer} (Ctrl-C again to abandon it)`,
          ),
          receiver.lines.join("\n"),
        );
        assert(
          receiver.lines.includes(
            `receive: ${peer}: receiving 2 guests (${names(paths).join(", ")})`,
          ),
        );
        if (signals.length === 1) {
          assertEquals(status.code, 0, "the gang ended first");
          assertEquals(send.code, 0, send.stderr);
          assertEquals(Deno.readDirSync(dir).toArray().map((e) => e.name).sort(), names(paths));
        } else {
          assertEquals(status.code, 1);
          assertEquals(send.code, 1, "the sender was told");
          // Its reason, or (when the sender was writing as the receiver closed) the connection's end.
          assert(/abandoned the gang|closed the connection|reset/.test(send.stderr), send.stderr);
          assertEquals(Deno.readDirSync(dir).toArray(), [], "its files (and journal) removed");
        }
      } finally {
        await removeFiles(...paths);
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("receive exits at once on a signal when no gang is in progress", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await startReceiver(dir);
    receiver.process.kill("SIGINT");
    assertEquals((await receiver.status).code, 0);
    assert(!receiver.events.some((e) => e.event === "stopping"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a receiver killed mid-gang leaves a journal, and the next one removes the gang's files", async () => {
  const paths = guests("killed");
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    {
      await using receiver = await startReceiver(dir);
      const sent = slowSend(receiver.port, paths);
      await waitFor(() => receiver.events.some((e) => e.event === "accepted"), "the gang");
      receiver.process.kill("SIGKILL");
      await receiver.status;
      assertEquals((await sent).code, 1);
    }
    const left = Deno.readDirSync(dir).toArray().map((e) => e.name).sort();
    assertEquals(left, [JOURNAL_NAME, ...names(paths)], "partial files under the guests' names");
    await using receiver = await startReceiver(dir);
    // It recovers before it says it listens.
    assertEquals(receiver.events.slice(0, 2).map((e) => e.event), ["recovered", "listening"]);
    assertEquals(receiver.events[0], { event: "recovered", guests: names(paths) });
    // Its log line comes on the other pipe, maybe a moment later.
    await waitFor(
      () => receiver.lines.some((l) => l.startsWith("receive: recovered: undid the files")),
      "the recovered line",
    );
    assertEquals(Deno.readDirSync(dir).toArray(), []);
    // And the gang can be sent again (it was refused: "exists and holds data").
    const again = await runCli("send", [
      ...["--target", `127.0.0.1:${receiver.port}`, "--insecure", ...paths],
    ], { permissions: SEND });
    assertEquals(again.code, 0, again.stderr);
    assertEquals(Deno.readDirSync(dir).toArray().map((e) => e.name).sort(), names(paths));
  } finally {
    await removeFiles(...paths);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receive with a journal's name holding no journal exits with the error, never saying it listens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await Deno.chmod(dir, 0o700);
    assert(
      (await new Deno.Command("mkfifo", { args: [`${dir}/${JOURNAL_NAME}`] }).output()).success,
    );
    const { code, stdout, stderr } = await runCli("receive", [
      ...["--listen", "127.0.0.1:0", "--dir", dir, "--insecure", "--json"],
    ], { permissions: RECEIVE });
    assertEquals(code, 1, stderr);
    assert(stderr.includes("is not a journal gangway wrote (not a regular file)"), stderr);
    assert(!stdout.includes("listening") && !stderr.includes("listening"), stdout + stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receive says a guest's file cannot be made because the target directory is gone", async () => {
  const path = makeRamFile(shmPath("orphan"), [patternPage(1)]);
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await startReceiver(dir);
    await Deno.remove(dir);
    const { code, stderr } = await runCli("send", [
      ...["--target", `127.0.0.1:${receiver.port}`, "--insecure", path],
    ], { permissions: SEND });
    assertEquals(code, 1);
    assert(stderr.includes(`the target directory "${dir}" no longer exists`), stderr);
    assert(!stderr.includes("gangway-probe") && !stderr.includes("os error"), stderr);
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("receive makes no directory when it cannot listen, and names a directory it cannot make once", async (t) => {
  await t.step("port in use", async () => {
    using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const dir = `${await Deno.makeTempDir({ prefix: "gangway-target-" })}/new`;
    const { code, stderr } = await runCli("receive", [
      ...["--listen", `127.0.0.1:${(taken.addr as Deno.NetAddr).port}`, "--dir", dir, "--insecure"],
    ], { permissions: RECEIVE });
    assertEquals(code, 1);
    assert(stderr.includes("Cannot listen"), stderr);
    assertEquals(await Deno.stat(dir).catch(() => "missing"), "missing");
    await Deno.remove(dir.replace(/\/new$/, ""));
  });
  await t.step("a directory under /proc", async () => {
    const { code, stderr } = await runCli("receive", [
      ...["--listen", "127.0.0.1:0", "--dir", "/proc/nonexist/x", "--insecure"],
    ], { permissions: RECEIVE });
    assertEquals(code, 1);
    assert(
      stderr.includes(
        'error: Cannot make the target directory "/proc/nonexist/x": no such file (ENOENT)\n',
      ),
      stderr,
    );
  });
});

Deno.test("a gang of one guest is logged as one guest", async () => {
  const path = makeRamFile(shmPath("single"), [patternPage(1)], PAGE_SIZE);
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await startReceiver(dir);
    const sent = await runCli("send", [
      ...["--target", `127.0.0.1:${receiver.port}`, "--insecure", path],
    ], { permissions: SEND });
    assertEquals(sent.code, 0, sent.stderr);
    const name = names([path])[0];
    await waitFor(() => receiver.lines.some((l) => l.includes("complete")), "the gang");
    assert(
      receiver.lines.some((l) => l.endsWith(`: receiving 1 guest (${name})`)),
      receiver.lines.join("\n"),
    );
  } finally {
    await removeFiles(path);
    await Deno.remove(dir, { recursive: true });
  }
});
