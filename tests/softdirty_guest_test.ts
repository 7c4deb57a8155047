/**
 * Soft-dirty tracking where the kernel has it. This machine's kernel lacks
 * CONFIG_MEM_SOFT_DIRTY (the soft-dirty tests of pagemap_test.ts and
 * dirty_tracking_test.ts skip here), Debian's 6.1 has it: the test boots
 * the guest kernel with an initramfs whose /init is the static check
 * ffi/tests/softdirty_guest.c. It makes the production tracker's calls into
 * ffi/pagemap.c against a process that writes a shared file as QEMU writes
 * guest RAM, prints its verdict on the serial console and resets the
 * machine, which ends QEMU (-no-reboot).
 *
 * @module
 */
import { join } from "node:path";
import { assert } from "./_assert.ts";
import { buildLibrary, SOFTDIRTY_GUEST_PATH } from "../ffi/build.ts";
import { writeCpio } from "../src/qemu/_cpio.ts";
import { withTimeout } from "../src/_delay.ts";
import { QemuGuest } from "../src/qemu/guest.ts";
import { Guests, testImage, uniqueName } from "./qemu_helpers.ts";

/** The check's last line: "ok N pages" or "FAIL why". */
const VERDICT = /gangway-softdirty (ok \d+ pages|FAIL [^\r\n]*)/;
/**
 * Boot, check and reset take about 10 s of CPU under TCG, 25-50 s of wall
 * time on this 2-core machine while other QEMUs run: a bound for a hung
 * guest, not a speed goal.
 */
const DEADLINE_MS = 120_000;

/** An initramfs of one program, the check, as /init; /dev/console carries its output. */
async function writeCheckInitramfs(dir: string): Promise<string> {
  const path = join(dir, "softdirty.cpio");
  await Deno.writeFile(
    path,
    writeCpio([
      ...["dev", "proc", "shm"].map((path) => ({ kind: "dir" as const, path })),
      { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
      { kind: "file", path: "init", data: await Deno.readFile(SOFTDIRTY_GUEST_PATH), mode: 0o755 },
    ]),
  );
  return path;
}

/** The end of a serial log, for failure messages. */
function tail(log: string): string {
  return log.split("\n").slice(-30).join("\n");
}

Deno.test("soft-dirty tracking names exactly the written pages on Debian's 6.1 kernel (in a QEMU guest)", async () => {
  await buildLibrary({ variant: "guest", quiet: true });
  const { kernel, kernelVersion } = await testImage();
  const dir = await Deno.makeTempDir({ prefix: "gangway-softdirty-" });
  try {
    await using guests = new Guests();
    const guest = guests.add(
      await QemuGuest.start({
        name: uniqueName("softdirty"),
        memoryMiB: 128,
        image: { kernel, kernelVersion, initrd: await writeCheckInitramfs(dir) },
        kernelArgs: ["quiet"],
        runDir: dir,
      }),
    );
    const ended = await withTimeout(
      guest.exited.then(() => true),
      DEADLINE_MS,
      () => new Error("timeout"),
    ).catch(() => false);
    const log = await Deno.readTextFile(guest.serialLog);
    const verdict = VERDICT.exec(log)?.[1];
    assert(verdict !== undefined, `no verdict in ${DEADLINE_MS} ms:\n${tail(log)}`);
    assert(verdict.startsWith("ok "), `the check failed: ${verdict}\n${tail(log)}`);
    assert(ended, `the guest printed its verdict but did not reset:\n${tail(log)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
