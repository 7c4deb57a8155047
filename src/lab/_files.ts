/**
 * Directories of a lab run, made and removed with `mkdir` and `rm`: Deno's
 * own file APIs ask for `--allow-all` under /dev (the RAM files live in
 * /dev/shm). A tree may hold a file system the run mounted (huge_tmpfs.ts):
 * it is unmounted before the tree is removed. Internal to src/lab.
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
 * Removes a directory tree, unmounting first what is mounted in it; a
 * missing one is fine.
 *
 * Requires `--allow-run` (runs `cat`, `umount`, `rm`).
 */
export async function removeTree(path: string): Promise<void> {
  for (const mount of mountsIn(await runTool("cat", [MOUNTS]), path)) {
    await runTool("umount", ["--lazy", mount]);
  }
  await runTool("rm", ["-rf", "--", path]);
}

/**
 * {@linkcode removeTree}, synchronously: for exit handlers.
 *
 * Requires `--allow-run` (runs `cat`, `umount`, `rm`).
 */
export function removeTreeSync(path: string): void {
  for (const mount of mountsIn(runToolSync("cat", [MOUNTS]), path)) {
    runToolSync("umount", ["--lazy", mount]);
  }
  runToolSync("rm", ["-rf", "--", path]);
}

/** This process's mounts, one a line: device, mount point, type, options... */
const MOUNTS = "/proc/self/mounts";

/**
 * The mount points at `path` or under it, deepest first, from the text of
 * /proc/self/mounts (which writes a space in a path as `\040`). Lazily
 * unmounted: a QEMU that still has a file open keeps only that file.
 */
export function mountsIn(mounts: string, path: string): string[] {
  const root = path.replace(/\/+$/, "");
  return mounts.split("\n")
    .map((line) =>
      line.split(" ")[1]?.replace(
        /\\([0-7]{3})/g,
        (_, octal) => String.fromCharCode(parseInt(octal, 8)),
      )
    )
    .filter((point): point is string => point === root || point?.startsWith(`${root}/`) === true)
    .sort((a, b) => b.length - a.length);
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
