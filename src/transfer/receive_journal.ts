/**
 * The journal of the files a gang is receiving, kept in the target
 * directory (`.gangway-receiving`) while the gang runs: a receiver killed
 * mid-gang (kill -9, a crash) cannot remove what it made, so the next
 * server of the directory does (`recoverInterruptedGang` in
 * target_files.ts). A guest's name never starts with a dot, so the
 * journal is never a guest's file.
 *
 * Page i + 1 holds guest i's entry as JSON (page 0 is the format's mark):
 * each change rewrites or punches one page, which a killed process leaves
 * whole, so the journal is never half written. Kept through the C library:
 * Deno's own file calls ask for `--allow-all` under /dev, where /dev/shm
 * is, and a receiver has only `--allow-read --allow-write` (removing a
 * file needs no more).
 *
 * @module
 */
import { join } from "node:path";
import { PAGE_SIZE, RamFile } from "../native/ram_file.ts";
import { NativeError } from "../native/errno.ts";
import { MAX_GUESTS } from "./receiver_options.ts";

/** The journal's name in the target directory. */
export const JOURNAL_NAME = ".gangway-receiving";

const MARK = "gangway receive journal 1";

/**
 * What the gang did to a guest's file: `creating` (about to create it:
 * it may or may not exist yet), `created` (it made the file), `existing`
 * (the file was there, holding no data, with `sizeBefore` bytes).
 * `created` and `existing` name the file itself (`file`: "dev:ino"), so
 * that recovery never undoes another file put at that name since, nor
 * one a link put there points to (tmpfs, where RAM files live, does not
 * give a new file the inode number of one just removed; some disk file
 * systems do).
 */
export interface JournalEntry {
  name: string;
  state: "creating" | "created" | "existing";
  file?: string;
  sizeBefore?: number;
}

/** A file's identity as a journal entry names it: "dev:ino". */
export function fileIdentity(file: RamFile): string {
  const { dev, ino } = file.stat();
  return `${dev}:${ino}`;
}

/** The journal of one gang: made empty, one entry per guest, removed when the gang ends. */
export class ReceiveJournal {
  readonly #file: RamFile;
  readonly #page = new Uint8Array(PAGE_SIZE);

  private constructor(file: RamFile) {
    this.#file = file;
  }

  /**
   * Makes an empty journal in `dir` for a gang of `guests` guests.
   *
   * @throws Error when something at the journal's name cannot be removed (another user's file);
   * NativeError when it cannot be made (the directory is read-only, or gone)
   */
  static create(dir: string, guests: number): ReceiveJournal {
    const path = join(dir, JOURNAL_NAME);
    // Made new, never opened where it is: in a directory others may write (/dev/shm), a file
    // another user put at its name would hold the gang's journal for them to read and rewrite, and
    // one could not be removed at the gang's end. What is there is a journal of this receiver's
    // that an earlier gang could not remove (recovery, at the start, undid what it named).
    removeLeftoverJournal(dir);
    let file: RamFile;
    try {
      file = RamFile.open(path, { createNew: true });
    } catch (error) {
      if (!(error instanceof NativeError) || error.code !== "EEXIST") throw error;
      throw new Error(
        `Cannot keep the gang's journal in "${dir}": "${path}" is there and cannot be removed ` +
          "(another user's file?): remove it to start",
      );
    }
    try {
      file.resize((guests + 1) * PAGE_SIZE);
      const journal = new ReceiveJournal(file);
      journal.#writePage(0, MARK);
      return journal;
    } catch (error) {
      // A full directory fails the first write: no journal of nothing is left behind.
      file.close();
      removeLeftoverJournal(dir);
      throw error;
    }
  }

  /** Records what the gang did to guest `index`'s file. */
  set(index: number, entry: JournalEntry): void {
    this.#writePage(index + 1, JSON.stringify(entry));
  }

  /** Forgets guest `index`: its file is no longer the gang's to undo (verified, or refused). */
  clear(index: number): void {
    this.#file.punch(index + 1, 1);
  }

  /** Removes the journal: the gang ended, its files are kept or were undone. Never throws. */
  remove(): void {
    this.#file.close();
    try {
      Deno.removeSync(this.#file.path);
    } catch {
      // Gone already (the directory was removed): nothing is left to recover either.
    }
  }

  #writePage(page: number, text: string): void {
    this.#page.fill(0);
    const { written } = new TextEncoder().encodeInto(text, this.#page);
    if (written < text.length) throw new RangeError(`A journal entry of ${text.length} characters`);
    this.#file.write(Uint32Array.of(page), this.#page);
  }
}

/**
 * The entries of a journal an earlier server of `dir` left, if any; the
 * journal itself is left (remove it with {@linkcode removeLeftoverJournal}
 * once its entries are undone). An entry that cannot be read is skipped.
 *
 * @throws Error when what has the journal's name is no journal gangway wrote (a link, a
 * directory, a file another user owns, a file larger than {@linkcode MAX_GUESTS} entries, or one
 * with data and no journal mark): the directory needs a look
 */
export function readLeftoverJournal(dir: string): JournalEntry[] | undefined {
  const path = join(dir, JOURNAL_NAME);
  // Opened through the C library, never looked at with Deno.lstat: Deno asks for --allow-all to
  // read anything under /dev, /dev/shm included (denoland/deno#30979), where RAM files belong.
  let file: RamFile;
  try {
    file = RamFile.open(path, { noFollow: true });
  } catch (error) {
    if (!(error instanceof NativeError)) throw error;
    if (error.code === "ENOENT") return undefined;
    // A link, a pipe, a socket or a directory at its name: not a journal, and never followed.
    if (["ELOOP", "EINVAL", "EISDIR", "ENXIO"].includes(error.code)) {
      throw new Error(
        `"${path}" is not a journal gangway wrote (not a regular file): remove it to start`,
      );
    }
    throw error;
  }
  using _file = file;
  // In a directory others may write to (/dev/shm), a journal another user made could name this
  // user's files: recovery would remove or empty them.
  if (!file.stat().ownedByThisUser) {
    throw new Error(
      `"${path}" is not a journal gangway wrote (another user owns it): remove it to start`,
    );
  }
  // A receiver writes its journal as a file of a page per guest and a page more: a larger file
  // (a huge sparse one would take hours to read) is not one.
  if (file.size > (MAX_GUESTS + 1) * PAGE_SIZE) {
    throw new Error(
      `"${path}" is not a journal gangway wrote (${file.size} bytes): remove it to start`,
    );
  }
  const entries: JournalEntry[] = [];
  const buf = new Uint8Array(PAGE_SIZE);
  const hasData = new Uint8Array(1);
  const decoder = new TextDecoder();
  // A page is written as its text then zeros: anything after the first zero means it is not one.
  const text = () => {
    const end = buf.indexOf(0);
    if (end >= 0 && buf.subarray(end).some((byte) => byte !== 0)) return undefined;
    return decoder.decode(buf.subarray(0, end < 0 ? buf.length : end));
  };
  // Page 0 holds the mark, written before any entry. Without it the file is a journal whose making
  // was cut short (nothing written in it yet), or something else: that is not removed.
  let marked = false;
  if (file.pages > 0) {
    file.read(0, 1, buf, hasData);
    marked = hasData[0] === 1 && text() === MARK;
  }
  for (let page = marked ? 1 : 0; page < file.pages; page++) {
    file.read(page, 1, buf, hasData);
    if (!hasData[0]) continue; // never written, or cleared
    if (!marked) {
      throw new Error(
        `"${path}" is not a journal gangway wrote (no journal mark): remove it to start`,
      );
    }
    const written = text();
    if (written === undefined) continue; // bytes after its text: not an entry this version wrote
    try {
      const entry = JSON.parse(written);
      if (typeof entry?.name === "string" && !entry.name.startsWith(".")) entries.push(entry);
    } catch {
      // Not an entry this version wrote: left alone.
    }
  }
  return entries;
}

/** Removes a leftover journal once its entries are undone. */
export function removeLeftoverJournal(dir: string): void {
  try {
    Deno.removeSync(join(dir, JOURNAL_NAME));
  } catch {
    // Gone already.
  }
}
