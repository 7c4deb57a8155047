/**
 * The source's temporary directory of a remote target's relay sockets
 * (`gw-relay-PID-XXXX` in the temporary directory). Its owner removes it
 * when it closes; a source process killed in the middle of a migration
 * cannot, so the pid of the process that made it is in its name, and each
 * new one removes those whose process is gone. Internal to src/target.
 *
 * @module
 */
import { dirname } from "node:path";
import { removeStaleDirs } from "../_stale_dirs.ts";

/** The name of a relay directory, with the pid of the process that made it. */
const RELAY_DIR = /^gw-relay-(\d+)-/;

/**
 * Makes a relay directory for this process, after removing the relay
 * directories beside it of processes that no longer run.
 *
 * Requires `--allow-read` (the temporary directory, /proc) and `--allow-write`.
 *
 * @returns The new directory
 */
export async function makeRelayDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `gw-relay-${Deno.pid}-` });
  await removeStaleRelayDirs(dirname(dir));
  return dir;
}

/**
 * Removes the relay directories in `parent` whose process no longer runs.
 *
 * Requires `--allow-read` (`parent`, /proc) and `--allow-write`.
 *
 * @returns Their paths
 */
export function removeStaleRelayDirs(parent: string): Promise<string[]> {
  return removeStaleDirs(parent, RELAY_DIR);
}
