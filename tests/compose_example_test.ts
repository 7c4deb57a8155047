import { fileURLToPath } from "node:url";
import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { runCommand, spawnReceiver } from "./_cli.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";

const COMPOSE = fileURLToPath(new URL("../examples/compose.ts", import.meta.url));

Deno.test("examples/compose.ts scans, plans and transfers a gang step by step to receive, which verifies it", async () => {
  const a = makeRamFile(shmPath("a"), [patternPage(1), "hole", patternPage(2), "zero"]);
  const b = makeRamFile(shmPath("b"), [patternPage(2), patternPage(3)]);
  const dir = await Deno.makeTempDir({ prefix: "gangway-target-" });
  try {
    await using receiver = await spawnReceiver(dir, ["--insecure", "--once"]);
    const { code, stdout, stderr } = await runCommand(Deno.execPath(), [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-net=127.0.0.1",
      "--allow-env=GANGWAY_LIB",
      COMPOSE,
      "--target",
      `127.0.0.1:${receiver.port}`,
      "--insecure",
      a,
      b,
    ]);
    assertEquals(code, 0, stderr);
    const lines = stdout.trim().split("\n");
    // The scan found page 2 of `a` again in `b`; round 1 sends it once and refers to it once,
    // the final round finds nothing changed.
    assertEquals(
      lines[0],
      "compose: prepared 6 pages: 2 zero, 3 distinct contents, 1 duplicates (1 across guests)",
    );
    assert(
      /^compose: round 1: \d+ bytes; 3 pages in full, 1 references, 2 zero$/.test(lines[1]!),
      stdout,
    );
    assert(
      /^compose: round 2 \(final\): \d+ bytes; 0 pages in full, 0 references, 0 zero$/.test(
        lines[2]!,
      ),
      stdout,
    );
    assert(/^compose: verified 2 guests with \d+ bytes on the wire$/.test(lines[3]!), stdout);
    assertEquals(lines.length, 4, stdout);
    assertEquals((await receiver.exited()).code, 0);
    assert(receiver.events.some((e) => e.event === "complete"), JSON.stringify(receiver.events));
    for (const path of [a, b]) {
      assertSameBytes(readRamFile(`${dir}/${path.split("/").at(-1)}`), readRamFile(path));
    }
  } finally {
    await removeFiles(a, b);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/compose.ts refuses an unknown flag with a usage line, not a stack trace", async () => {
  const run = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../examples/compose.ts", import.meta.url)),
      "--bogus",
    ],
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(run.stderr);
  assertEquals(run.code, 2, stderr);
  assert(stderr.includes("Unknown option '--bogus'") && stderr.includes("usage:"), stderr);
  assert(!/^\s+at /m.test(stderr), `a stack trace: ${stderr}`);
  const run2 = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        fileURLToPath(new URL("../examples/compose.ts", import.meta.url)),
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const help = await run2("--help");
  assertEquals(help.code, 0);
  assert(new TextDecoder().decode(help.stdout).startsWith("usage:"));
  const rounds = await run2("--target", "[::1]:9", "--insecure", "--max-rounds", "1.5", "f");
  assertEquals(rounds.code, 2);
  assert(
    new TextDecoder().decode(rounds.stderr).includes(
      '--max-rounds needs a positive integer, got "1.5"',
    ),
  );
});
