/**
 * Whether a path exists: shared by modules that look for files before
 * making them (certificates, system packages). Internal to src.
 *
 * @module
 */

/** Options of {@linkcode pathExists}. */
export interface PathExistsOptions {
  /**
   * Follow a symbolic link to what it names (default true). False: the link
   * itself counts, even when it names nothing: the test of a name that must
   * be free before something is made there.
   */
  followLinks?: boolean;
}

/**
 * True when `path` exists, false when it does not.
 *
 * Requires `--allow-read` for the path.
 *
 * @throws any error of stat other than "not found" (a permission denied is not an answer)
 */
export async function pathExists(path: string, options: PathExistsOptions = {}): Promise<boolean> {
  try {
    await (options.followLinks === false ? Deno.lstat(path) : Deno.stat(path));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
