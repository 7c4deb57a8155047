/**
 * An exclusive lock on a target directory, held while a receiver runs, so
 * that two receivers never write the same guests' RAM files.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/**
 * Locks a directory, which must exist and be writable.
 *
 * Requires `--allow-ffi`.
 *
 * @throws NativeError when the directory is missing, not writable, or
 * locked by another process ("locked by another receiver")
 */
export function lockDirectory(path: string): Disposable & { unlock(): void } {
  const fd = check(
    native().gw_dir_lock(new TextEncoder().encode(path + "\0")),
    `Cannot receive into "${path}"`,
    {
      EWOULDBLOCK: "another receiver is using it",
      EAGAIN: "another receiver is using it",
      ENOTDIR: "not a directory",
      ENOENT: "no such directory",
    },
  );
  let locked = true;
  const unlock = () => {
    if (!locked) return;
    locked = false;
    native().gw_dir_unlock(fd);
  };
  return { unlock, [Symbol.dispose]: unlock };
}
