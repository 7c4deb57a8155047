import { assert, assertEquals } from "./_assert.ts";
import { join } from "node:path";
import { findQemuProcess, findQemus } from "../src/qemu/discover.ts";
import { uniqueName } from "./qemu_helpers.ts";

/**
 * A process that `ps` calls `qemu-system-x86_64` and whose command line is
 * one gangway can migrate, without QEMU: a copy of sh under that name,
 * waiting on its stdin (a builtin: no child of its own), the QEMU options
 * after its script being only its positional parameters.
 */
function fakeQemu(program: string, prefix: string[], name: string, dir: string) {
  const args = [
    "-c",
    "read line",
    "-name",
    `guest=${name}`,
    "-machine",
    "pc,memory-backend=mem",
    "-m",
    "16M",
    "-object",
    `memory-backend-file,id=mem,size=16M,mem-path=/dev/shm/${name},share=on`,
    "-nodefaults",
    "-display",
    "none",
    "-qmp",
    `unix:${dir}/${name}.qmp,server=on,wait=off`,
    "-net",
    "none",
    "-no-reboot",
  ];
  const [command, ...rest] = [...prefix, program, ...args];
  return new Deno.Command(command!, { args: rest, stdin: "piped", stdout: "null", stderr: "null" })
    .spawn();
}

Deno.test({
  name: "a QEMU of another mount namespace is told apart, and its QMP path is not taken for ours",
  ignore: Deno.uid() !== 0, // unshare --mount needs root
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "gangway-discover-" });
    const program = join(dir, "qemu-system-x86_64");
    await Deno.copyFile("/bin/sh", program);
    await Deno.chmod(program, 0o755);
    const name = uniqueName("ns");
    // The same command line twice: the same QMP path, one here and one in a mount namespace
    // of its own (as a container's QEMU, or the other host of a simulated pair).
    const here = fakeQemu(program, [], name, dir);
    const elsewhere = fakeQemu(
      program,
      ["unshare", "--mount", "--propagation", "private"],
      name,
      dir,
    );
    try {
      let found: Awaited<ReturnType<typeof findQemus>>["usable"] = [];
      for (let tries = 0; tries < 50 && found.length < 2; tries++) {
        found = (await findQemus()).usable.filter((q) => q.commandLine.instance.name === name);
        if (found.length < 2) await new Promise((r) => setTimeout(r, 100));
      }
      assertEquals(
        found.map((q) => [q.pid, q.otherMountNamespace]).sort(),
        [[here.pid, false], [elsewhere.pid, true]].sort(),
      );
      const qmpPath = `${dir}/${name}.qmp`;
      assertEquals((await findQemuProcess(qmpPath)).pid, here.pid, "ours first");
      assertEquals(
        (await findQemuProcess(qmpPath, { otherMountNamespace: true })).pid,
        elsewhere.pid,
        "the other one when asked for (a path reached through /proc/PID/root)",
      );
    } finally {
      for (const child of [here, elsewhere]) {
        child.kill("SIGKILL");
        await child.stdin.close().catch(() => {});
        assert((await child.status).signal === "SIGKILL");
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("findQemuProcess finds a QEMU whose QMP path holds characters ps does not print", async () => {
  // In the C locale ps shows each byte of "ü" as "?": the QEMU is then found by reading every
  // QEMU's command line, as it is when ps does not name it.
  const dir = await Deno.makeTempDir({ prefix: "gangway-discover-ü-" });
  const program = join(dir, "qemu-system-x86_64");
  await Deno.copyFile("/bin/sh", program);
  await Deno.chmod(program, 0o755);
  const name = uniqueName("ps");
  const qemu = fakeQemu(program, [], name, dir); // spawn() returns once it runs sh
  const locale = Deno.env.get("LC_ALL");
  Deno.env.set("LC_ALL", "C"); // for ps
  try {
    assertEquals((await findQemuProcess(`${dir}/${name}.qmp`)).pid, qemu.pid);
  } finally {
    if (locale === undefined) Deno.env.delete("LC_ALL");
    else Deno.env.set("LC_ALL", locale);
    qemu.kill("SIGKILL");
    await qemu.stdin.close().catch(() => {});
    await qemu.status;
    await Deno.remove(dir, { recursive: true });
  }
});
