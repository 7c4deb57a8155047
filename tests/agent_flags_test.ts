/**
 * The `agent` command refuses, before it listens, flags that would only
 * show when a source's gang fails or that would open the host to a source
 * (red-team findings s20-1 and s20-6). No guest is started. And a wait a
 * source asks for is bounded both ways (red-team finding s21-3).
 */
import { join } from "node:path";
import { loadWaitMs } from "../src/target/agent_control.ts";
import { assert, assertEquals } from "./_assert.ts";

/** Runs the agent with `flags` (it must refuse them at once) and returns its exit code and stderr. */
async function refused(root: string, flags: string[]): Promise<{ code: number; said: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../src/cli/agent.ts", import.meta.url).pathname,
      "--listen",
      "127.0.0.1:0",
      "--insecure",
      "--dir",
      join(root, "ram"),
      "--run-dir",
      join(root, "run"),
      "--json",
      ...flags,
    ],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assertEquals(new TextDecoder().decode(stdout), "", "it says nothing on stdout: no event");
  return { code, said: new TextDecoder().decode(stderr) };
}

Deno.test("the agent refuses at start-up empty, relative and missing --shared-disks entries, a bad --qemu-binary and unknown --accelerators", async () => {
  const root = await Deno.makeTempDir({ prefix: "gangway-agent-flags-" });
  try {
    const shared = join(root, "shared");
    await Deno.mkdir(shared);
    const notExecutable = join(root, "qemu");
    await Deno.writeTextFile(notExecutable, "#!/bin/sh\n");
    await Deno.chmod(notExecutable, 0o644);
    const cases: [string[], string][] = [
      [
        ["--shared-disks", `${shared},`],
        'shared-disk directory "" (--shared-disks): an empty entry',
      ],
      [["--shared-disks", ""], "an empty entry (a trailing or doubled comma?)"],
      [["--shared-disks", `${shared},,${shared}`], "an empty entry"],
      [["--shared-disks", "srv/disks"], '"srv/disks" (--shared-disks): it is not an absolute path'],
      [["--shared-disks", join(root, "none")], "(--shared-disks): it does not exist"],
      [["--qemu-binary", "/nonexistent/qemu"], '--qemu-binary "/nonexistent/qemu": no such file'],
      [["--qemu-binary", notExecutable], "it is not executable (mode 0644)"],
      [["--qemu-binary", "no-such-qemu-here"], "no such program in PATH"],
      [["--accelerators", "kvm,foo"], '--accelerators takes tcg, kvm (comma-separated), not "foo"'],
    ];
    const results = await Promise.all(cases.map(([flags]) => refused(root, flags)));
    results.forEach(({ code, said }, i) => {
      const [flags, message] = cases[i]!;
      assert(code !== 0, `${flags.join(" ")}: the agent started`);
      // One line that says what is wrong.
      const error = said.split("\n").find((line) => line.startsWith("error: "));
      assert(error?.includes(message), `${flags.join(" ")}: ${said}`);
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the agent makes no directory when a flag is bad or its port is taken", async () => {
  const root = await Deno.makeTempDir({ prefix: "gangway-agent-flags-" });
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const cases: [string[], string][] = [
      [["--max-guests", "0"], '--max-guests needs a positive integer, got "0"'],
      [["--max-guests", "65537"], "--max-guests takes at most 65536, got 65537"],
      [
        ["--max-memory", "1K"],
        '--max-memory must be at least 1M (guests take whole MiB), got "1K"',
      ],
      [["--idle-timeout", "2147484"], "--idle-timeout takes at most 2147483 seconds"],
      [["--handshake-timeout", "x"], '--handshake-timeout needs a positive integer, got "x"'],
      [["--listen", `127.0.0.1:${taken.addr.port}`], "Address already in use"],
    ];
    for (const [flags, message] of cases) {
      const { code, said } = await refused(root, flags);
      assert(code !== 0, `${flags.join(" ")}: the agent started`);
      assert(said.split("\n").some((l) => l.startsWith("error: ") && l.includes(message)), said);
      assertEquals(Deno.readDirSync(root).toArray(), [], `${flags.join(" ")}: directories made`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("run-when-loaded waits what the source asks, at most 5 minutes, and 30 s for a wait that is no wait", () => {
  assertEquals(loadWaitMs(500), 500);
  assertEquals(loadWaitMs(3_600_000), 300_000);
  for (const asked of [undefined, -1, 0, "soon", Number.NaN, null]) {
    assertEquals(loadWaitMs(asked), 30_000);
  }
});
