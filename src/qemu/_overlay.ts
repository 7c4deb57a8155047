/**
 * A guest's own copy-on-write disk: a qcow2 overlay over the image's
 * read-only raw base, so that every guest of an image shares one base.
 *
 * @module
 */
import { run } from "./_run.ts";

/**
 * Makes `overlay`, a qcow2 file whose reads fall through to `base` until
 * the guest writes (`qemu-img create -f qcow2 -b BASE -F raw`).
 *
 * Requires `--allow-run` (qemu-img).
 *
 * @throws Error quoting qemu-img when it cannot be made
 */
export async function createOverlay(overlay: string, base: string): Promise<void> {
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay]);
}
