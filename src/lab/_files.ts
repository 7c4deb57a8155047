/**
 * Directories of a lab run, made and removed with `mkdir` and `rm`: Deno's
 * own file APIs ask for `--allow-all` under /dev (the RAM files live in
 * /dev/shm). Internal to src/lab.
 *
 * @module
 */
import { runTool, runToolSync } from "./netns_exec.ts";

/**
 * Makes a directory and its parents.
 *
 * Requires `--allow-run` (runs `mkdir`).
 */
export async function makeDir(path: string): Promise<void> {
  await runTool("mkdir", ["-p", path]);
}

/**
 * Removes a directory tree; a missing one is fine.
 *
 * Requires `--allow-run` (runs `rm`).
 */
export async function removeTree(path: string): Promise<void> {
  await runTool("rm", ["-rf", "--", path]);
}

/**
 * {@linkcode removeTree}, synchronously: for exit handlers.
 *
 * Requires `--allow-run` (runs `rm`).
 */
export function removeTreeSync(path: string): void {
  runToolSync("rm", ["-rf", "--", path]);
}

/**
 * The entries of a directory (names only), even under /dev.
 *
 * Requires `--allow-run` (runs `ls`).
 */
export async function listDir(path: string): Promise<string[]> {
  try {
    return (await runTool("ls", ["-1A", "--", path])).split("\n").filter((name) => name !== "");
  } catch {
    return [];
  }
}
