/**
 * Where a target agent lets a shared disk be: files strictly inside one
 * of its shared-disk directories (`--shared-disks`), compared by path
 * components on real paths. A directory is resolved once, at start-up; a
 * disk path when a gang is prepared, and the destination's QEMU gets the
 * real path it resolved to. So `/srv/disksX/y` is not in `/srv/disks`, a
 * symbolic link in the directory that points out of it does not pass, and
 * an empty or relative entry (a trailing comma once made every absolute
 * path a "shared disk") is refused before the agent listens. A qcow2
 * disk's header may name other files (a backing file, an external data
 * file) that QEMU would open wherever they are: such a disk is refused
 * unless the description gives its base (which QEMU then opens instead).
 *
 * @module
 */
import { isAbsolute, relative, sep } from "node:path";
import { errorMessage } from "../_errors.ts";
import {
  DescriptionError,
  isCopied,
  type MachineDescription,
  sharedDiskWhere,
} from "./machine_description.ts";

/** By disk index, the real paths of a description's shared disks: its file, and its base if any. */
export type SharedDiskPaths = Record<number, { path: string; base?: string }>;

/**
 * Checks the shared-disk directories of an agent and resolves them.
 *
 * Requires `--allow-read` (`--allow-all` for a directory under /dev).
 *
 * @param dirs The directories, as the agent was given them
 * @returns Their real paths, in the same order
 * @throws Error naming the entry and why, for an empty or relative entry, the
 * root, or one that is not an existing directory
 */
export function resolveSharedDirs(dirs: readonly string[]): string[] {
  return dirs.map((dir) => {
    const refuse = (why: string) =>
      new Error(
        `Cannot use the shared-disk directory ${JSON.stringify(dir)} (--shared-disks): ${why}`,
      );
    if (dir === "") {
      throw refuse("an empty entry (a trailing or doubled comma?) would allow every path");
    }
    if (!isAbsolute(dir)) throw refuse("it is not an absolute path");
    let real: string;
    try {
      real = Deno.realPathSync(dir);
    } catch (error) {
      throw refuse(
        error instanceof Deno.errors.NotFound ? "it does not exist" : errorMessage(error),
      );
    }
    if (!Deno.statSync(real).isDirectory) throw refuse("it is not a directory");
    // The root holds every path, /etc/shadow and /dev/sda as much as disks: what the empty entry's
    // refusal keeps out.
    if (real === "/") throw refuse("it is the root directory, which would allow every path");
    return real;
  });
}

/** True when `path` lies strictly inside `dir`, by path components (both absolute and resolved). */
export function strictlyInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/**
 * The real path of a shared disk's file, when it is a regular file
 * strictly inside one of `realDirs` (real paths, from
 * {@linkcode resolveSharedDirs}); undefined for anything else (no such
 * file, a device, a link out of the directories).
 *
 * Requires `--allow-read`.
 */
export async function resolveSharedDisk(
  path: string,
  realDirs: readonly string[],
): Promise<string | undefined> {
  let real: string;
  try {
    real = await Deno.realPath(path);
    if (!(await Deno.stat(real)).isFile) return undefined;
  } catch {
    return undefined;
  }
  return realDirs.some((dir) => strictlyInside(real, dir)) ? real : undefined;
}

/**
 * Resolves the shared disks of a checked description: each file (and base)
 * to its real path, which must be a regular file strictly inside one of
 * `realDirs`.
 *
 * Requires `--allow-read`.
 *
 * @returns By disk index, the real paths (for `ResolvedFiles.sharedDisks`, agent_machine.ts)
 * @throws DescriptionError naming the first field whose file is elsewhere or missing
 */
export async function resolveSharedDisks(
  description: MachineDescription,
  realDirs: readonly string[],
): Promise<SharedDiskPaths> {
  const resolved: SharedDiskPaths = {};
  const find = async (path: string, field: string) => {
    const real = await resolveSharedDisk(path, realDirs);
    if (real === undefined) {
      throw new DescriptionError(
        `Cannot start guest "${description.name}": field "${field}" must be ${
          sharedDiskWhere(realDirs)
        }, not ${JSON.stringify(path)}`,
      );
    }
    return real;
  };
  for (const [index, disk] of (description.disks ?? []).entries()) {
    if (isCopied(disk)) continue;
    const path = await find(disk.path, `disks[${index}].path`);
    const why = disk.format === "qcow2"
      ? await qcow2NamesOtherFiles(path, disk.base !== undefined)
      : undefined;
    if (why !== undefined) {
      throw new DescriptionError(
        `Cannot start guest "${description.name}": field "disks[${index}].path" is a qcow2 ` +
          `image that ${why}, which QEMU would open wherever it is`,
      );
    }
    resolved[index] = disk.base === undefined
      ? { path }
      : { path, base: await find(disk.base, `disks[${index}].base`) };
  }
  return resolved;
}

/** Bytes of a qcow2 header this reads: version 3's, up to its incompatible features and more. */
const QCOW2_HEADER_BYTES = 104;
const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 incompatible feature bit 2: the guest data is in an external file the header names. */
const QCOW2_EXTERNAL_DATA = 4n;

/**
 * Why the qcow2 image at `path` would make QEMU open a file the agent did
 * not check: its header names a backing file (unless the description
 * gives a base, which replaces it) or an external data file. Undefined
 * when it names none, or is no qcow2 image at all (QEMU refuses that).
 *
 * Requires `--allow-read`.
 */
export async function qcow2NamesOtherFiles(
  path: string,
  hasBase: boolean,
): Promise<string | undefined> {
  const header = new Uint8Array(QCOW2_HEADER_BYTES);
  let length = 0;
  {
    using file = await Deno.open(path);
    while (length < header.length) {
      const n = await file.read(header.subarray(length));
      if (n === null) break;
      length += n;
    }
  }
  const view = new DataView(header.buffer, 0, length);
  if (length < 72 || view.getUint32(0) !== QCOW2_MAGIC) return undefined;
  if (!hasBase && view.getBigUint64(8) !== 0n) {
    return "names a backing file in its header (give it as the disk's base)";
  }
  if (view.getUint32(4) >= 3 && length >= 80 && (view.getBigUint64(72) & QCOW2_EXTERNAL_DATA)) {
    return "keeps its data in an external file its header names";
  }
  return undefined;
}
