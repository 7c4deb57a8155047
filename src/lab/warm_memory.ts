/**
 * Memory made ready just before a migration, the same way before every
 * method's.
 *
 * The lab's hosts are VMs whose hypervisor backs a page of memory only
 * when it is first used after the guest kernel reported it free (free
 * page reporting hands back memory that stayed free for some seconds):
 * such a first use costs some 12 us a page here, against 1.5 us for a
 * page freed moments before, which the kernel hands out first. A
 * migration's target allocates a page for each page it receives, so a
 * method whose migration found reported memory took a second longer on
 * the lab's gang than one that found memory another method had just
 * freed: gangway, which runs first, saw round 1 take 2.0-2.3 s instead of
 * 1.1-1.3 s about one run in two, its target's thread spending a second
 * in the kernel's copies into new pages while the link waited. A real
 * host has no such cost. So just before each migration the lab writes and
 * removes a quarter more tmpfs than the source guests' QEMUs hold (the
 * target writes about as much, its own QEMUs included: memoryToWarm): the
 * pages the migration then allocates have been used. How long that took
 * says how cold the memory was; the summary prints it for every method
 * (docs/lab-results/runs/ab-31). It is done as far as it can be: a file
 * system that fills up ends it, not the run.
 *
 * @module
 */
import { join } from "node:path";

/** Bytes written at a time. */
const CHUNK_BYTES = 1 << 20;

/** What {@linkcode warmMemory} did. */
export interface WarmedMemory {
  /** Bytes written and removed (fewer than asked when the file system filled up). */
  bytes: number;
  /** How long that took: the more of it was reported memory, the longer. */
  seconds: number;
}

/** What was made ready, in words: "0.92 GiB in 1.45 s". */
export function describeWarmed(warmed: WarmedMemory): string {
  return `${(warmed.bytes / 2 ** 30).toFixed(2)} GiB in ${warmed.seconds.toFixed(2)} s`;
}

/**
 * Writes `bytes` (rounded up to a MiB) to a new file in `dir` (tmpfs), or
 * as many as fit, then removes it: the memory it used is free again, and
 * used.
 *
 * Requires `--allow-write` (dir).
 *
 * @throws Error if the file cannot be made, or exists already (it is never someone else's)
 */
export async function warmMemory(dir: string, bytes: number): Promise<WarmedMemory> {
  const path = join(dir, "warm-memory");
  const chunk = new Uint8Array(CHUNK_BYTES);
  const started = performance.now();
  const file = await Deno.open(path, { write: true, createNew: true });
  let done = 0;
  try {
    while (done < bytes) {
      for (let at = 0; at < CHUNK_BYTES;) at += file.writeSync(chunk.subarray(at));
      done += CHUNK_BYTES;
    }
  } catch {
    // Full (a tmpfs smaller than the memory): what was written is ready, and the run goes on.
  } finally {
    file.close();
    await Deno.remove(path);
  }
  return { bytes: done, seconds: (performance.now() - started) / 1000 };
}
