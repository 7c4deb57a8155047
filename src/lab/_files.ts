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
 * Removes a directory tree, a file system mounted in it included (the lab's
 * tmpfs of huge pages): its files first, which frees their memory whoever
 * still holds the mount (host B's mount namespace has a copy of every mount
 * made before it), then the mount, then the rest. A missing tree is fine.
 *
 * Requires `--allow-run` (runs `rm`, `cat`, `umount`).
 *
 * @throws Error naming what could not be removed or unmounted
 */
export async function removeTree(path: string): Promise<void> {
  const mounts = mountsIn(await runTool("cat", [MOUNTS]), path);
  if (mounts.length > 0) {
    await runTool("rm", ["-rf", "--", path]).catch(() => {}); // all but the mount points
  }
  let failure: unknown;
  for (const mount of mounts) {
    await runTool("umount", ["--lazy", mount]).catch((error) => (failure ??= error));
  }
  await runTool("rm", ["-rf", "--", path]).catch((error) => (failure ??= error));
  if (failure) throw failure;
}

/**
 * {@linkcode removeTree}, synchronously, and never throwing: for exit
 * handlers (the next session removes what is left).
 *
 * Requires `--allow-run` (runs `rm`, `cat`, `umount`).
 */
export function removeTreeSync(path: string): void {
  const run = (cmd: string, args: string[]) => {
    try {
      return runToolSync(cmd, args);
    } catch {
      return "";
    }
  };
  run("rm", ["-rf", "--", path]);
  for (const mount of mountsIn(run("cat", [MOUNTS]), path)) run("umount", ["--lazy", mount]);
  run("rm", ["-rf", "--", path]);
}

/** This process's mounts, one a line: device, mount point, type, options... */
const MOUNTS = "/proc/self/mounts";

/**
 * The mount points at `path` or under it, deepest first, from the text of
 * /proc/self/mounts (which writes a space in a path as `\040`).
 *
 * @throws RangeError for a path that is not absolute, or is the root (every mount is under it)
 */
export function mountsIn(mounts: string, path: string): string[] {
  const root = path.replace(/\/+$/, "");
  if (!path.startsWith("/") || root === "") {
    throw new RangeError(`Cannot look for mounts under "${path}": not an absolute path below /`);
  }
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
