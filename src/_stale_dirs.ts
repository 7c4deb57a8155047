/**
 * Directories named with the pid of the process that made them, removed
 * once that process is gone: what a process killed before it could clean
 * up leaves (a source's relay sockets, a lab run's run directory). Internal
 * to src.
 *
 * @module
 */
import { join } from "node:path";
import { isRunning } from "./_processes.ts";

/**
 * Removes the directories in `parent` whose name matches `pattern` with
 * the pid of a process that no longer runs as its first group. Those it
 * cannot remove (another user's) are left. A process of another pid
 * namespace that shares `parent` would look gone: use it for one host's
 * processes.
 *
 * Requires `--allow-read` (`parent`, /proc) and `--allow-write`.
 *
 * @returns The paths removed
 */
export async function removeStaleDirs(parent: string, pattern: RegExp): Promise<string[]> {
  const removed: string[] = [];
  for await (const entry of Deno.readDir(parent)) {
    const pid = pattern.exec(entry.name)?.[1];
    if (!entry.isDirectory || pid === undefined || isRunning(Number(pid))) continue;
    const path = join(parent, entry.name);
    try {
      await Deno.remove(path, { recursive: true });
      removed.push(path);
    } catch {
      // Removed first by another process cleaning up, or another user's: not this one's to remove.
    }
  }
  return removed;
}
