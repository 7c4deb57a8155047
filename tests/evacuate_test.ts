import { assert, assertEquals } from "./_assert.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { readHeartbeat } from "../src/qemu/heartbeat.ts";
import { assertContinued, fileExists, testImage, uniqueName } from "./qemu_helpers.ts";

const EVACUATE = new URL("../examples/evacuate.ts", import.meta.url).href;
const PERMISSIONS = [
  "--allow-ffi",
  "--allow-run",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
];

/** Quits every QEMU running one of these guests and removes its RAM file: the test's cleanup. */
async function quitAll(names: string[]): Promise<void> {
  const { usable } = await findQemus();
  for (const found of usable.filter((q) => names.includes(q.commandLine.instance.name))) {
    try {
      const guest = await QemuGuest.attach(found.commandLine.instance.qmpPath);
      await guest.close({ removeRam: true });
      // The run directory evacuate.ts made for the destination holds its QMP socket and logs.
      await Deno.remove(guest.runDir, { recursive: true }).catch(() => {});
    } catch {
      Deno.kill(found.pid, "SIGKILL");
    }
  }
}

Deno.test("examples/evacuate.ts moves guests started by another process and they go on at the target", async () => {
  const image = await testImage();
  const runDirs: string[] = [];
  const sockets: string[] = [];
  const names = [uniqueName("ev0"), uniqueName("ev1")];
  const targetDir = `/dev/shm/gangway-test-evacuate-${Deno.pid}`;
  try {
    // Guests started by "someone else": this test boots them and lets go of them.
    for (const name of names) {
      const runDir = await Deno.makeTempDir({ prefix: "gangway-evacuate-" });
      runDirs.push(runDir);
      const guest = await QemuGuest.start({
        name,
        memoryMiB: 128,
        image,
        runDir,
        workload: { checkEverySeconds: 1 },
      });
      sockets.push(`${runDir}/${name}.qmp`);
      await guest.waitUntilBooted();
      await guest.detach();
    }

    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, EVACUATE, "--target-dir", targetDir, ...sockets],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assertEquals(run.code, 0, stderr);
    const report = JSON.parse(new TextDecoder().decode(run.stdout));
    assertEquals(
      report.guests.map((g: { name: string; migrated: boolean }) => [g.name, g.migrated]),
      names.map((n) => [n, true]),
    );
    assert(report.transfer.verified);
    assert(stderr.includes("Switching over"), stderr);

    // The sources are gone; QEMUs with the same names now run from the target directory.
    const { usable } = await findQemus();
    for (const name of names) {
      const moved = usable.filter((q) => q.commandLine.instance.name === name);
      assertEquals(moved.length, 1, `one QEMU runs guest "${name}"`);
      const { ramPath, qmpPath } = moved[0]!.commandLine.instance;
      assertEquals(ramPath, `${targetDir}/${name}`);
      const guest = await QemuGuest.attach(qmpPath);
      try {
        assertEquals((await guest.status()).status, "running");
        // The source's serial log (in the run directory the test gave it) ends where it stopped.
        const last = (await readHeartbeat(`${runDirs[names.indexOf(name)]}/${name}.serial.log`))!;
        await assertContinued(last, guest);
      } finally {
        await guest.detach();
      }
      assert(!(await fileExists(`/dev/shm/gangway-${name}`)), "the source RAM file is removed");
    }
  } finally {
    await quitAll(names);
    for (const dir of runDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(targetDir).catch(() => {});
  }
});
