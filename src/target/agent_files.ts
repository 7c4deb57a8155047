/**
 * The files a target agent starts destinations from (kernels, initrds, the
 * base images of copied disks), found by content: first a file of the same
 * name in the agent's images directory or one of its subdirectories (an
 * image cache keeps each image in its own) when its SHA-256 matches, then
 * the agent's own cache of files that sources sent (`CACHE/SHA256`). A file
 * is sent at most once; what arrives is checked against its hash before it
 * is used.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { type FileRef, MAX_BASE_BYTES } from "./machine_description.ts";
import { sha256OfFile } from "./_file_hash.ts";
import { errorMessage } from "../_errors.ts";

/** The end of the name of a file still being received into the cache. */
const PARTIAL_SUFFIX = ".part";

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
      for (const path of await namedIn(imagesDir, ref.name)) {
        if (await hashOf(path, ref.size) === ref.sha256) return path;
      }
    }
    const cached = join(cacheDir, ref.sha256);
    if (await hashOf(cached, ref.size) === ref.sha256) return cached;
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
    if (ref.size > MAX_BASE_BYTES) {
      throw new Error(`Cannot take file "${ref.name}": ${ref.size} bytes is over the limit`);
    }
    const path = join(this.#options.cacheDir, ref.sha256);
    const partial = `${path}.${crypto.randomUUID()}${PARTIAL_SUFFIX}`;
    const hash = createHash("sha256");
    let got = 0;
    try {
      await Deno.mkdir(this.#options.cacheDir, { recursive: true, mode: 0o700 });
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
      const why = errorMessage(error);
      // A full disk, a read-only cache: said with the file's name, like the refusals above.
      throw why.startsWith("Cannot take file")
        ? error
        : new Error(`Cannot take file "${ref.name}": ${why}`, { cause: error });
    }
  }

  /**
   * Removes the files that transfers left half written when an agent
   * died (`*.part` in the cache). Only at start-up: the run directory is
   * then this agent's alone (the agent command locks it).
   *
   * @returns How many it removed
   */
  async removePartials(): Promise<number> {
    let removed = 0;
    try {
      for await (const entry of Deno.readDir(this.#options.cacheDir)) {
        if (!entry.isFile || !entry.name.endsWith(PARTIAL_SUFFIX)) continue;
        await Deno.remove(join(this.#options.cacheDir, entry.name));
        removed++;
      }
    } catch (error) {
      // No cache (yet, or something else in its place: each put then says why it cannot write).
      if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory)) {
        throw error;
      }
    }
    return removed;
  }
}

/** The files called `name` in `dir` and in its direct subdirectories (not following links out). */
async function namedIn(dir: string, name: string): Promise<string[]> {
  const paths = [join(dir, name)];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) paths.push(join(dir, entry.name, name));
    }
  } catch {
    // No such directory: nothing is found in it.
  }
  return paths;
}

/** The SHA-256 of a regular file of this size; undefined for anything else. */
async function hashOf(path: string, size: number): Promise<string | undefined> {
  try {
    const info = await Deno.stat(path);
    if (!info.isFile || info.size !== size) return undefined;
    return (await sha256OfFile(path)).sha256;
  } catch {
    return undefined;
  }
}
