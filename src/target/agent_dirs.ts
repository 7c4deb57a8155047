/**
 * The directories a target agent writes, checked before it uses them. A
 * directory another user made first (a `/dev/shm/gangway` of mode 0777,
 * say) would let its owner swap in a RAM file and read a guest's RAM, or
 * put a socket where a destination's QMP socket goes. So each directory
 * the agent writes must belong to its user and be writable by no one else,
 * and so must every directory above it, unless that one is sticky (as
 * /dev/shm and /tmp are: no one can rename another's directory there).
 * Missing ones are made with mode 0700. The agent then uses their real
 * paths: a symbolic link swapped later changes nothing.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { errorMessage } from "../_errors.ts";

/** The directories of an agent, as its options name them. */
export interface AgentDirs {
  /** Directory of the destinations' RAM files. */
  dir: string;
  /** Directory of its own files (sockets, logs, files sources sent). */
  runDir: string;
  /** Directory of the copied disks' overlays. Default `RUN_DIR/disks`. */
  diskDir?: string;
  /** Read-only directory of images: it may belong to root, but no one else may write it. */
  imagesDir?: string;
}

/** Mode bits that let group or others write. */
const WRITABLE_BY_OTHERS = 0o022;
/** The sticky bit: only an entry's owner may rename or remove it. */
const STICKY = 0o1000;

/**
 * Makes the agent's directories that are missing (mode 0700) and checks
 * them all; also its subdirectories `files` and `guests` of the run
 * directory, and the disk directory.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-sys=uid`.
 *
 * @returns The same options with the real paths of the directories (and `diskDir` set)
 * @throws Error `Cannot use the RAM directory "/dev/shm/gangway": group or others may write it (mode 0777)`
 */
export async function checkAgentDirs<T extends AgentDirs>(
  options: T,
): Promise<T & { diskDir: string }> {
  const uid = Deno.uid();
  if (uid === null) throw new Error("Cannot check the agent's directories: no user ids here");
  const dir = await ownPrivateDir(options.dir, "the RAM directory", uid);
  const runDir = await ownPrivateDir(options.runDir, "the run directory", uid);
  await ownPrivateDir(join(runDir, "files"), "the file cache", uid);
  await ownPrivateDir(join(runDir, "guests"), "the guests' run directory", uid);
  const diskDir = await ownPrivateDir(
    options.diskDir ?? join(runDir, "disks"),
    "the disk directory",
    uid,
  );
  const imagesDir = options.imagesDir === undefined
    ? undefined
    : await checkDir(options.imagesDir, "the images directory", uid, [0, uid]);
  return { ...options, dir, runDir, diskDir, ...imagesDir === undefined ? {} : { imagesDir } };
}

/** Makes `path` (mode 0700) unless it exists, and checks that only this user may write it. */
async function ownPrivateDir(path: string, what: string, uid: number): Promise<string> {
  try {
    await Deno.mkdir(path, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(`Cannot use ${what} "${path}": ${errorMessage(error)}`, { cause: error });
  }
  return await checkDir(path, what, uid, [uid]);
}

/**
 * Checks that `path` is a directory owned by one of `owners` that group
 * and others cannot write, below directories that no one but root and
 * `uid` can swap it in.
 *
 * @returns Its real path
 */
async function checkDir(
  path: string,
  what: string,
  uid: number,
  owners: readonly number[],
): Promise<string> {
  const refuse = (why: string) => new Error(`Cannot use ${what} "${path}": ${why}`);
  let real: string;
  let info: Deno.FileInfo;
  try {
    real = await Deno.realPath(path);
    info = await Deno.stat(real);
  } catch (error) {
    throw refuse(errorMessage(error));
  }
  if (!info.isDirectory) throw refuse("it is not a directory");
  if (info.uid === null || !owners.includes(info.uid)) {
    throw refuse(`it belongs to uid ${info.uid}, not to this agent's uid ${uid}`);
  }
  const mode = (info.mode ?? 0) & 0o7777;
  if (mode & WRITABLE_BY_OTHERS) {
    throw refuse(`group or others may write it (mode ${octal(mode)})`);
  }
  // Up to the root, which is its own parent.
  for (
    let child = real, parent = dirname(real);
    parent !== child;
    child = parent, parent = dirname(parent)
  ) {
    const above = await Deno.stat(parent);
    if (above.uid !== 0 && above.uid !== uid) {
      throw refuse(`"${parent}" above it belongs to uid ${above.uid}, who could swap it`);
    }
    const aboveMode = (above.mode ?? 0) & 0o7777;
    if ((aboveMode & WRITABLE_BY_OTHERS) && !(aboveMode & STICKY)) {
      throw refuse(
        `group or others may write "${parent}" above it (mode ${octal(aboveMode)}), and swap it`,
      );
    }
  }
  return real;
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}
