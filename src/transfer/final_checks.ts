/**
 * What makes a final round final: the gang's files still have the sizes
 * they had when it was opened (a file that shrank or grew would be read
 * past its end as zeros, or short of it), and, for a caller that cannot
 * pause the writers, no page changed after the final round read it. A
 * report says `verified` only when the target holds exactly what the
 * source holds as the final round ends.
 *
 * @module
 */
import type { Gang } from "../scan/gang.ts";
import { rescanGuest } from "../scan/scan_gang.ts";
import { RamFile } from "../native/ram_file.ts";
import { errorMessage } from "../_errors.ts";

/**
 * Throws, naming the file, when a guest's RAM file no longer has the size
 * it had when the gang was opened.
 *
 * Requires `--allow-ffi`.
 */
export function checkSizesUnchanged(gang: Gang): void {
  for (const guest of gang.guests) {
    const now = guest.ram.stat().size;
    if (now !== guest.ram.size) {
      throw new Error(
        `Cannot verify guest "${guest.name}": its RAM file "${guest.ram.path}" changed size ` +
          `from ${guest.ram.size} to ${now} bytes during the migration`,
      );
    }
  }
}

/**
 * Throws, naming the guest, when the file at a guest's path is no longer
 * the one the gang opened (renamed over, as editors, `rsync` and `mv` do,
 * or removed): the target would hold the file as it was opened, not what
 * the path names now.
 *
 * Requires `--allow-ffi`.
 */
export function checkStillAtTheirPaths(gang: Gang): void {
  for (const guest of gang.guests) {
    const opened = guest.ram.stat();
    let now: { dev: bigint; ino: bigint };
    try {
      using file = RamFile.open(guest.ram.path);
      now = file.stat();
    } catch (error) {
      throw new Error(
        `Cannot verify guest "${guest.name}": its RAM file "${guest.ram.path}" cannot be opened ` +
          `again after the final round (${errorMessage(error)}): it was removed or replaced`,
      );
    }
    if (now.dev !== opened.dev || now.ino !== opened.ino) {
      throw new Error(
        `Cannot verify guest "${guest.name}": the file at "${guest.ram.path}" was replaced during ` +
          "the migration (the target holds the file as it was opened, not the one there now)",
      );
    }
  }
}

/**
 * Reads the whole gang once more after its final round and throws when a
 * page changed since that round read it (the target would hold pages of
 * two moments) or a file was replaced at its path, naming the guests. For callers that cannot pause what
 * writes the files (`send`); where the guests are paused it only costs a
 * read.
 *
 * Requires `--allow-ffi`.
 */
export function checkUnchangedSinceFinalRound(gang: Gang): void {
  checkSizesUnchanged(gang);
  checkStillAtTheirPaths(gang);
  const changed = gang.guests.flatMap((guest) => {
    const pages = rescanGuest(gang, guest.number).length;
    return pages > 0 ? [`${pages} pages of "${guest.name}" (${guest.ram.path})`] : [];
  });
  if (changed.length > 0) {
    throw new Error(
      `Cannot verify the gang: ${changed.join(", ")} changed after the final round read them: ` +
        "something still writes these files, and the final round needs every writer paused",
    );
  }
}
