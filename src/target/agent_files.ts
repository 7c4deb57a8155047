/**
 * The files a target agent starts destinations from (kernels, initrds),
 * found by content: first the file of the same name under the agent's
 * images directory when its SHA-256 matches, then the agent's own cache of
 * files that sources sent (`CACHE/SHA256`). A file is sent at most once;
 * what arrives is checked against its hash before it is used.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type FileRef, MAX_FILE_BYTES } from "./machine_description.ts";

/** Bytes read at a time while hashing a file. */
const HASH_PIECE_BYTES = 2 ** 20;

/** Where an agent keeps and looks for files. */
export interface FileStoreOptions {
  /** Read-only directory of images the host already has (by file name, checked by hash). */
  imagesDir?: string;
  /** Directory of files sources sent, named by their SHA-256. */
  cacheDir: string;
}

/** Finds files by content and takes new ones. */
export class FileStore {
  readonly #options: FileStoreOptions;
  /** Hashes of files already read (or being read), by "path size mtime". */
  readonly #hashes = new Map<string, Promise<string>>();

  /** A store over these directories (the cache directory is made when first written). */
  constructor(options: FileStoreOptions) {
    this.#options = options;
  }

  /**
   * The local path of a file with this content, or undefined when the
   * agent has none.
   *
   * Requires `--allow-read` (the directories).
   */
  async find(ref: FileRef): Promise<string | undefined> {
    const { imagesDir, cacheDir } = this.#options;
    if (imagesDir !== undefined) {
      const path = join(imagesDir, ref.name);
      if (await this.#hashOf(path, ref.size) === ref.sha256) return path;
    }
    const cached = join(cacheDir, ref.sha256);
    if (await this.#hashOf(cached, ref.size) === ref.sha256) return cached;
    return undefined;
  }

  /**
   * Writes a file that arrives in pieces, checks its size and hash, and
   * keeps it under its hash.
   *
   * Requires `--allow-write` (the cache directory).
   *
   * @param pieces The file's bytes, in order; they must add up to `ref.size`
   * @returns Its path in the cache
   * @throws Error when more or fewer bytes arrive, or the hash differs (nothing is kept)
   */
  async receive(ref: FileRef, pieces: AsyncIterable<Uint8Array>): Promise<string> {
    if (ref.size > MAX_FILE_BYTES) {
      throw new Error(`Cannot take file "${ref.name}": ${ref.size} bytes is over the limit`);
    }
    await Deno.mkdir(this.#options.cacheDir, { recursive: true, mode: 0o700 });
    const path = join(this.#options.cacheDir, ref.sha256);
    const partial = `${path}.${crypto.randomUUID()}.part`;
    const hash = createHash("sha256");
    let got = 0;
    try {
      // Written as it arrives: a large file costs no memory.
      using file = await Deno.open(partial, { write: true, createNew: true, mode: 0o600 });
      for await (const piece of pieces) {
        if (got + piece.length > ref.size) {
          throw new Error(`Cannot take file "${ref.name}": more than ${ref.size} bytes arrived`);
        }
        hash.update(piece);
        for (let done = 0; done < piece.length;) done += await file.write(piece.subarray(done));
        got += piece.length;
        if (got === ref.size) break;
      }
      if (got !== ref.size) {
        throw new Error(`Cannot take file "${ref.name}": ${got} of ${ref.size} bytes arrived`);
      }
      if (hash.digest("hex") !== ref.sha256) {
        throw new Error(`Cannot take file "${ref.name}": its content does not match its SHA-256`);
      }
      await Deno.rename(partial, path);
      return path;
    } catch (error) {
      await Deno.remove(partial).catch(() => {});
      throw error;
    }
  }

  /** The SHA-256 of a regular file of this size, remembered by size and mtime; undefined otherwise. */
  async #hashOf(path: string, size: number): Promise<string | undefined> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch {
      return undefined;
    }
    if (!info.isFile || info.size !== size) return undefined;
    const key = `${path} ${info.size} ${info.mtime?.getTime()}`;
    // One reading per file, however many requests name it at once.
    let hash = this.#hashes.get(key);
    if (hash === undefined) {
      hash = sha256OfFile(path);
      this.#hashes.set(key, hash);
      hash.catch(() => this.#hashes.delete(key));
    }
    return await hash.catch(() => undefined);
  }
}

/** SHA-256 of a file as lowercase hex, read a piece at a time: a large file costs no memory. */
async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  const buffer = new Uint8Array(HASH_PIECE_BYTES);
  for (let got = await file.read(buffer); got !== null; got = await file.read(buffer)) {
    hash.update(buffer.subarray(0, got));
  }
  return hash.digest("hex");
}
