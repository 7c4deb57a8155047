/**
 * What the QEMU tests share: the guest image, unique names, a RAM copy
 * done the simple way, and cleanup that leaves no QEMU or RAM file behind.
 *
 * @module
 */
import { assert, assertEquals } from "./_assert.ts";
import { ensureGuestImage, type GuestImage } from "../src/qemu/guest_image.ts";
import type { QemuGuest } from "../src/qemu/guest.ts";
import { type Heartbeat, parseHeartbeats } from "../src/qemu/heartbeat.ts";
import { withTimeout } from "../src/_delay.ts";

let image: Promise<GuestImage> | undefined;

/** The guest image, provisioned once per test process. */
export function testImage(): Promise<GuestImage> {
  image ??= ensureGuestImage();
  return image;
}

/** A guest name no other test process uses. */
export function uniqueName(what: string): string {
  return `gwt-${what}-${Deno.pid}-${crypto.randomUUID().slice(0, 6)}`;
}

/**
 * Copies a guest's RAM file into another one in place (no truncation),
 * page by page, skipping all-zero pages so holes stay holes. `dd` does it
 * because Deno cannot open files under /dev without --allow-all. The
 * target must not hold stale non-zero pages (a fresh destination does not).
 */
export async function copyRamFile(from: string, to: string): Promise<void> {
  const { success, stderr } = await new Deno.Command("dd", {
    args: [`if=${from}`, `of=${to}`, "bs=4096", "conv=notrunc,sparse", "status=none"],
  }).output();
  if (!success) {
    throw new Error(`Cannot copy "${from}" to "${to}": ${new TextDecoder().decode(stderr)}`);
  }
}

/** True when a file exists, even under /dev (asks `test -e`). */
export async function fileExists(path: string): Promise<boolean> {
  return (await new Deno.Command("test", { args: ["-e", path] }).output()).success;
}

/**
 * Guests a test starts; `close()` stops every one, removes their RAM files
 * and checks nothing is left.
 */
export class Guests implements AsyncDisposable {
  #all: QemuGuest[] = [];
  /** Run directories of guests let go of: no guest object removes them any more. */
  #detachedRunDirs: string[] = [];

  /** Remembers a guest for cleanup and returns it. */
  add(guest: QemuGuest): QemuGuest {
    this.#all.push(guest);
    return guest;
  }

  /**
   * Lets go of a guest (see `QemuGuest.detach`) whose run directory the
   * test made through it: the directory is removed at `close()`, once
   * its QEMU has quit through a guest attached again.
   */
  async detach(guest: QemuGuest): Promise<void> {
    this.#detachedRunDirs.push(guest.runDir);
    await guest.detach();
  }

  /**
   * Quits every guest, removes its RAM file and disk overlay and the run
   * directories of guests let go of, and asserts they are gone.
   */
  async close(): Promise<void> {
    for (const guest of this.#all) await guest.close({ removeRam: true, removeDisk: true });
    for (const dir of this.#detachedRunDirs) {
      await Deno.remove(dir, { recursive: true }).catch((error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
    }
    for (const guest of this.#all) {
      // A guest detached, then closed through another object attached to the same QEMU, is seen
      // to exit a moment later: its exit is waited for, not raced.
      await withTimeout(guest.exited, 5_000, () => new Error("still runs")).catch(() => {});
      assert(!guest.alive, `QEMU of "${guest.name}" still runs`);
      for (const path of [guest.ramPath, ...guest.overlays]) {
        assert(!(await fileExists(path)), `"${path}" is left behind`);
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Checks that a guest resumed at the destination instead of rebooting: its
 * first heartbeat there follows `last`, the source's last one (the next line may
 * be torn between the two logs), and its checksum checks stay good.
 */
export async function assertContinued(last: Heartbeat, destination: QemuGuest): Promise<void> {
  const beat = await destination.waitForHeartbeat({ after: last.counter, timeoutMs: 10_000 });
  const log = await Deno.readTextFile(destination.serialLog);
  const first = parseHeartbeats(log)[0]!;
  assert(
    first.counter === last.counter + 1 || first.counter === last.counter + 2,
    `heartbeat went from ${last.counter} to ${first.counter}`,
  );
  assert(!log.includes("gangway-ready"), "the destination rebooted");
  let checked = beat;
  for (let beats = 0; checked.checks <= last.checks; beats++) {
    assert(beats < 15, "no checksum check at the destination");
    checked = await destination.waitForHeartbeat({ after: checked.counter, timeoutMs: 10_000 });
  }
  assertEquals(checked.checksum, "ok");
}
