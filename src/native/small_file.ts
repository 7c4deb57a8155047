/**
 * A small file (a certificate, a key, a token) read whole through the C
 * library: Deno asks for `--allow-all` to read anything under /dev
 * (denoland/deno#30979), and /dev/shm, where the RAM files are, is a place
 * a user keeps such files too. Internal to src.
 *
 * @module
 */
import { PAGE_SIZE, RamFile } from "./ram_file.ts";

/** What {@linkcode readSmallFile} read. */
export interface SmallFile {
  /** Every byte of the file. */
  bytes: Uint8Array;
  /** Its st_mode: the type and the permission bits. */
  mode: number;
}

/**
 * Reads a regular file whole (links followed) and says its mode, both of
 * the one file opened.
 *
 * Requires `--allow-ffi`.
 *
 * @throws NativeError: `ENOENT`, `EACCES`, `EISDIR`, or `EINVAL` for a
 * FIFO, socket or device (refused as opened, never waited on)
 * @throws RangeError for a file over `maxBytes` (a RAM file named by mistake)
 */
export function readSmallFile(path: string, maxBytes: number): SmallFile {
  // Opened first: the open refuses anything but a regular file without blocking on a FIFO.
  using file = RamFile.open(path);
  if (file.size > maxBytes) {
    throw new RangeError(`${file.size} bytes, more than a file of this kind holds`);
  }
  const { mode } = file.stat(); // of the file read, not of whatever the path names by now
  const bytes = new Uint8Array(file.pages * PAGE_SIZE);
  if (file.pages > 0) file.read(0, file.pages, bytes, new Uint8Array(file.pages));
  return { bytes: bytes.subarray(0, file.size), mode };
}
