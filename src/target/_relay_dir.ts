/**
 * The source's temporary directory of a remote target's relay sockets
 * (`gw-relay-PID-XXXX` in the temporary directory). Its owner removes it
 * when it closes; a source process killed in the middle of a migration
 * cannot, so the pid of the process that made it is in its name, and each
 * new one removes those whose process is gone. Internal to src/target.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { isRunning } from "../_processes.ts";

const PREFIX = "gw-relay-";
/** The name of a relay directory and the pid in it. */
const NAME = /^gw-relay-(\d+)-[^/]+$/;

/**
 * Makes a relay directory for this process, after removing the relay
 * directories beside it of processes that no longer run. A process of
 * another pid namespace sharing this temporary directory would look gone:
 * the sockets are for one host's processes.
 *
 * Requires `--allow-read` (the temporary directory, /proc) and `--allow-write`.
 *
 * @returns The new directory
 */
export async function makeRelayDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `${PREFIX}${Deno.pid}-` });
  await removeStaleRelayDirs(dirname(dir));
  return dir;
}

/**
 * Removes the relay directories in `parent` whose process no longer runs
 * (those it cannot remove, another user's, are left).
 *
 * Requires `--allow-read` (`parent`, /proc) and `--allow-write`.
 *
 * @returns Their paths
 */
export async function removeStaleRelayDirs(parent: string): Promise<string[]> {
  const removed: string[] = [];
  for await (const entry of Deno.readDir(parent)) {
    const match = NAME.exec(entry.name);
    if (!entry.isDirectory || !match || isRunning(Number(match[1]))) continue;
    const path = join(parent, entry.name);
    try {
      await Deno.remove(path, { recursive: true });
      removed.push(path);
    } catch {
      // Removed first by another new one, or another user's: not this process's to remove.
    }
  }
  return removed;
}
