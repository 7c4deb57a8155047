/**
 * A gang's RAM files at the target: opened (or created) before WELCOME,
 * undone when the gang fails, and undone at start-up when a receiver of
 * the directory was killed mid-gang (through its journal,
 * receive_journal.ts). The receiver (receiver.ts) runs the gang around
 * them.
 *
 * @module
 */
import { join } from "node:path";
import { PAGE_SIZE, RamFile } from "../native/ram_file.ts";
import { NativeError } from "../native/errno.ts";
import { badGuestName, type Hello } from "./hello_frame.ts";
import {
  fileIdentity,
  readLeftoverJournal,
  type ReceiveJournal,
  removeLeftoverJournal,
} from "./receive_journal.ts";

/** A guest's RAM file at the target, and how the gang found it. */
export interface TargetFile {
  file: RamFile;
  /** True when the gang created it (mode 0600); false for a file that was there (kept as it was). */
  created: boolean;
  /** Its size before the gang (0 when created). */
  sizeBefore: number;
}

/**
 * What the user can do about a file the target directory cannot take: the
 * directory's state in words, not the system call that found it.
 */
export function targetDirError(error: unknown, dir: string, what: string): Error {
  const code = error instanceof NativeError ? error.code : undefined;
  const why = code === "EROFS"
    ? `the target directory "${dir}" is read-only`
    : code === "ENOENT"
    ? `the target directory "${dir}" no longer exists`
    : code === "EACCES" || code === "EPERM"
    ? `the target directory "${dir}" is not writable`
    : code === "ENOSPC" || code === "EDQUOT"
    ? `the target directory "${dir}" is full`
    : error instanceof Error
    ? error.message
    : String(error);
  return new Error(`${what}: ${why}`, { cause: error });
}

/**
 * Opens (or creates) each guest's RAM file at its declared size. A file
 * that was there must be empty, or of the guest's size and all holes (a
 * waiting destination QEMU's fresh file): one that holds data may be the
 * RAM of a guest running here, and is refused rather than overwritten.
 * Created files get mode 0600; a file that was there keeps its mode and
 * owner. With a journal, each file is in it before it is created or
 * accepted, so that a receiver killed now leaves nothing for good.
 */
export function openTargetFiles(
  hello: Hello,
  dir: string,
  journal?: ReceiveJournal,
): TargetFile[] {
  const targets: TargetFile[] = [];
  try {
    hello.guests.forEach(({ name, size }, index) => {
      const path = join(dir, name);
      const cannot = `Cannot receive guest "${name}"`;
      journal?.set(index, { name, state: "creating" });
      let file: RamFile;
      let created = true;
      try {
        // Exclusive: anything at the path (a file, a dangling link) is found, not followed.
        file = RamFile.open(path, { createNew: true });
      } catch (error) {
        if (!(error instanceof NativeError && error.code === "EEXIST")) {
          throw targetDirError(error, dir, cannot);
        }
        created = false;
        file = RamFile.open(path, { create: true }); // never through a link (O_NOFOLLOW)
        try {
          if (file.size !== 0 && file.size !== size) {
            throw new Error(`${cannot}: "${path}" exists with ${file.size} bytes, not ${size}`);
          }
          if (file.size !== 0 && file.stat().blocks > 0) {
            // It may be the RAM of a guest that runs here (a destination of an earlier gang).
            throw new Error(`${cannot}: "${path}" exists and holds data; remove it first`);
          }
        } catch (refused) {
          journal?.clear(index);
          file.close(); // refused: left exactly as it was
          throw refused;
        }
      }
      targets.push({ file, created, sizeBefore: file.size });
      if (journal) {
        const id = fileIdentity(file);
        journal.set(
          index,
          created ? { name, state: "created", file: id } : {
            name,
            state: "existing",
            file: id,
            sizeBefore: file.size,
          },
        );
      }
      if (file.size === 0) file.resize(size);
    });
    return targets;
  } catch (error) {
    discardTargetFiles(targets);
    throw error;
  }
}

/**
 * Undoes a gang that failed: files it created are removed; files that were
 * there are zeroed (every block freed, so a retry does not find them
 * "holding data") and get their size back. Best effort: never throws.
 */
export function discardTargetFiles(targets: TargetFile[]): void {
  for (const { file, created, sizeBefore } of targets) {
    try {
      if (created) {
        Deno.removeSync(file.path);
      } else {
        file.punch(0, file.pages);
        // Punching a short last page zeroes it but keeps its block: cut it off instead.
        const whole = file.size - (file.size % PAGE_SIZE);
        if (whole !== file.size) file.resize(whole);
        file.resize(sizeBefore);
      }
    } catch {
      // Best effort: the file was removed by someone else, or was never written.
    }
    file.close();
  }
}

/**
 * Undoes the gang a receiver of `dir` was receiving when it was killed,
 * as a failed gang is undone ({@linkcode discardTargetFiles}), from the
 * journal it left: files it created are removed (one it was about to
 * create only if it is empty, as it was then), files that were there are
 * zeroed. Only the very file the journal names (by device and inode) is
 * undone: one put at the guest's name since (a guest that runs here now),
 * or a link there to a file elsewhere, is left alone, as is an entry this
 * receiver did not write. Guests that finished alone are no longer in the
 * journal: they may run here.
 *
 * Only one server of the directory may run (lock it first: `lockDirectory`).
 *
 * Requires `--allow-ffi`, `--allow-read` and `--allow-write` (the directory).
 *
 * @returns The names of the guests whose files were undone
 */
export function recoverInterruptedGang(dir: string): string[] {
  const entries = readLeftoverJournal(dir);
  if (entries === undefined) return [];
  const undone: string[] = [];
  for (const { name, state, file: id, sizeBefore } of entries) {
    if (badGuestName(name) !== undefined) continue; // not a name the receiver wrote
    let file: RamFile;
    try {
      // Never through a link: the gang's own file moved elsewhere, with a link left at its name,
      // is that very file, and would be zeroed where it is now.
      file = RamFile.open(join(dir, name), { write: true, noFollow: true });
    } catch {
      continue; // gone already, never created, or a link
    }
    const ours = state === "creating"
      ? file.size === 0 // else it was there before, or is of no gang of this receiver's
      : (state === "created" || state === "existing") && id === fileIdentity(file) &&
        (state === "created" || sizeBefore === 0 || sizeBefore === file.size);
    if (!ours) {
      file.close();
      continue;
    }
    const created = state !== "existing";
    discardTargetFiles([{ file, created, sizeBefore: created ? 0 : sizeBefore ?? 0 }]);
    undone.push(name);
  }
  removeLeftoverJournal(dir);
  return undone;
}
