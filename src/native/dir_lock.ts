/**
 * An exclusive lock on a target directory, held while a receiver runs, so
 * that two receivers never write the same guests' RAM files; and what a
 * directory is, made if missing, without Deno's file system calls (which
 * ask for `--allow-all` anywhere under /dev, where /dev/shm is).
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
 * locked by another process ("another gangway receiver or agent is using it")
 */
export function lockDirectory(path: string): Disposable & { unlock(): void } {
  const fd = check(
    native().gw_dir_lock(cString(path)),
    `Cannot receive into "${path}"`,
    {
      EWOULDBLOCK: "another gangway receiver or agent is using it",
      EAGAIN: "another gangway receiver or agent is using it",
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

/**
 * Makes `path` and any directory missing above it (`mode` before the
 * umask); one that exists is kept as it is. Requires `--allow-ffi`.
 */
export function makeDirectories(path: string, mode: number): void {
  check(native().gw_dir_make(cString(path), mode), `Cannot make the directory "${path}"`);
}

/** What {@linkcode directoryInfo} says of a path. */
export interface DirectoryInfo {
  /** Its real path: links followed, `.` and `..` resolved. */
  real: string;
  /** Its owner. */
  uid: number;
  /** Its st_mode: the type and the permission bits. */
  mode: number;
  isDirectory: boolean;
}

/** The real path, owner and mode of `path` (links followed). Requires `--allow-ffi`. */
export function directoryInfo(path: string): DirectoryInfo {
  const real = new Uint8Array(4096);
  const info = new Uint32Array(2);
  const length = check(
    native().gw_dir_info(cString(path), real, real.length, info),
    `Cannot look at "${path}"`,
  );
  const mode = info[1]!;
  return {
    real: realPath(path, real.subarray(0, length)),
    uid: info[0]!,
    mode,
    isDirectory: (mode & 0o170000) === 0o040000,
  };
}

/** A real path as text; one that is not UTF-8 is refused (decoded, it would name another). */
function realPath(path: string, bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`Cannot look at "${path}": its real path is not UTF-8`);
  }
}

function cString(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}
