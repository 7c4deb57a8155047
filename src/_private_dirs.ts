/**
 * Directories a server writes, checked before it uses them (the target
 * agent's, `agent_dirs.ts`; the receiver's): one that another user made
 * first (a `/dev/shm/gangway` of mode 0777, say) would let its owner swap
 * in a RAM file and read a guest's RAM. Each must belong to this process's
 * user and be writable by no one else, and so must every directory above
 * it, unless that one is sticky (as /dev/shm and /tmp are: no one can
 * rename another's directory there). Missing ones are made with mode 0700.
 * Through the C library: Deno asks for `--allow-all` to stat or make
 * anything under /dev, where /dev/shm is. Internal to src.
 *
 * @module
 */
import { dirname } from "node:path";
import { errorMessage } from "./_errors.ts";
import { type DirectoryInfo, directoryInfo, makeDirectories } from "./native/dir_lock.ts";
import { NativeError } from "./native/errno.ts";

/** Mode bits that let group or others write. */
const WRITABLE_BY_OTHERS = 0o022;
/** The sticky bit: only an entry's owner may rename or remove it. */
const STICKY = 0o1000;

/** Makes `path` (mode 0700) unless it exists, and checks that only this user may write it. */
export function ownPrivateDir(path: string, what: string, uid: number): string {
  refuseUnsafeHome(path, what, uid);
  try {
    makeDirectories(path, 0o700);
  } catch (error) {
    // The reason alone: "Cannot make the directory" would say again what this says.
    const why = error instanceof NativeError ? error.reason : errorMessage(error);
    throw new Error(`Cannot make ${what} "${path}": ${why}`, { cause: error });
  }
  return checkDir(path, what, uid, [uid]);
}

/**
 * Checks that `path` is a directory owned by one of `owners` that group
 * and others cannot write, below directories that no one but root and
 * `uid` can swap it in.
 *
 * @returns Its real path
 */
export function checkDir(
  path: string,
  what: string,
  uid: number,
  owners: readonly number[],
): string {
  const refuse = (why: string) => new Error(`Cannot use ${what} "${path}": ${why}`);
  let info: DirectoryInfo;
  try {
    info = directoryInfo(path);
  } catch (error) {
    throw refuse(errorMessage(error));
  }
  const real = info.real;
  if (!info.isDirectory) throw refuse("it is not a directory");
  if (!owners.includes(info.uid)) {
    throw refuse(`it belongs to uid ${info.uid}, not to this process's uid ${uid}`);
  }
  const mode = info.mode & 0o7777;
  if (mode & WRITABLE_BY_OTHERS) {
    throw refuse(`group or others may write it (mode ${octal(mode)})`);
  }
  refuseSwappable(dirname(real), uid, refuse);
  return real;
}

/**
 * Where `path` is missing, checks the directory it would be made in as one
 * above it, before anything is made: a refusal leaves nothing behind.
 */
function refuseUnsafeHome(path: string, what: string, uid: number): void {
  let at = path;
  let found: DirectoryInfo;
  for (;;) {
    try {
      found = directoryInfo(at);
      break;
    } catch (error) {
      // Anything but a missing path is for making it to report.
      if (!(error instanceof NativeError && error.code === "ENOENT") || dirname(at) === at) return;
      at = dirname(at);
    }
  }
  // There already: checkDir checks it. Not a directory: making the path says so.
  if (at === path || !found.isDirectory) return;
  refuseSwappable(found.real, uid, (why) => new Error(`Cannot use ${what} "${path}": ${why}`));
}

/** Refuses `dir` and every directory above it, to the root, if a user other than root and `uid` could swap what is below. */
function refuseSwappable(dir: string, uid: number, refuse: (why: string) => Error): void {
  // Up to the root, which is its own parent.
  for (let child = "", parent = dir; parent !== child; child = parent, parent = dirname(parent)) {
    const above = directoryInfo(parent);
    if (above.uid !== 0 && above.uid !== uid) {
      throw refuse(`"${parent}" above it belongs to uid ${above.uid}, who could swap it`);
    }
    const aboveMode = above.mode & 0o7777;
    if ((aboveMode & WRITABLE_BY_OTHERS) && !(aboveMode & STICKY)) {
      throw refuse(
        `group or others may write "${parent}" above it (mode ${octal(aboveMode)}), and swap it`,
      );
    }
  }
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}
