/**
 * SHA-256 of files, read a piece at a time (a multi-GB base image costs no
 * memory) and remembered by path, size and modification time: a gang of
 * guests over one base image hashes it once.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** Bytes read at a time while hashing a file. */
const HASH_PIECE_BYTES = 2 ** 20;
/** Hashes of files read (or being read), by "path size mtime". */
const hashes = new Map<string, Promise<string>>();

/**
 * The SHA-256 of a regular file as lowercase hex, with its size.
 *
 * Requires `--allow-read`.
 *
 * @throws Error when it cannot be read or is not a regular file
 */
export async function sha256OfFile(path: string): Promise<{ sha256: string; size: number }> {
  const info = await Deno.stat(path);
  if (!info.isFile) throw new Error(`Cannot hash "${path}": it is not a regular file`);
  const key = `${path} ${info.size} ${info.mtime?.getTime()}`;
  // One reading per file, however many requests name it at once.
  let hash = hashes.get(key);
  if (hash === undefined) {
    hash = readHash(path);
    hashes.set(key, hash);
    hash.catch(() => hashes.delete(key));
  }
  return { sha256: await hash, size: info.size };
}

async function readHash(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  const buffer = new Uint8Array(HASH_PIECE_BYTES);
  for (let got = await file.read(buffer); got !== null; got = await file.read(buffer)) {
    hash.update(buffer.subarray(0, got));
  }
  return hash.digest("hex");
}
