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
import { join } from "node:path";
import { checkDir, ownPrivateDir } from "../_private_dirs.ts";
import { resolveSharedDirs } from "./shared_disks.ts";

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
  /** Directories of shared storage (not written by the agent): they must exist. */
  sharedDisks?: readonly string[];
}

/**
 * Makes the agent's directories that are missing (mode 0700) and checks
 * them all; also its subdirectories `files` and `guests` of the run
 * directory, and the disk directory. Resolves the shared-disk directories
 * (`resolveSharedDirs`: each must be an existing directory).
 *
 * Requires `--allow-ffi` (the checks go through the C library) and
 * `--allow-sys=uid`.
 *
 * @returns The same options with the real paths of the directories (and `diskDir` set)
 * @throws Error `Cannot use the RAM directory "/dev/shm/gangway": group or others may write it (mode 0777)`
 */
export function checkAgentDirs<T extends AgentDirs>(options: T): T & { diskDir: string } {
  const uid = Deno.uid();
  if (uid === null) throw new Error("Cannot check the agent's directories: no user ids here");
  // The directories only checked first: a refusal then leaves nothing made.
  const imagesDir = options.imagesDir === undefined
    ? undefined
    : checkDir(options.imagesDir, "the images directory", uid, [0, uid]);
  // Any owner (shared storage), but each an existing directory: an empty entry would be "/".
  const sharedDisks = options.sharedDisks && resolveSharedDirs(options.sharedDisks);
  const dir = ownPrivateDir(options.dir, "the RAM directory", uid);
  const runDir = ownPrivateDir(options.runDir, "the run directory", uid);
  ownPrivateDir(join(runDir, "files"), "the file cache", uid);
  ownPrivateDir(join(runDir, "guests"), "the guests' run directory", uid);
  const diskDir = ownPrivateDir(
    options.diskDir ?? join(runDir, "disks"),
    "the disk directory",
    uid,
  );
  return {
    ...options,
    dir,
    runDir,
    diskDir,
    ...imagesDir === undefined ? {} : { imagesDir },
    ...sharedDisks === undefined ? {} : { sharedDisks },
  };
}
