/**
 * Whether a path exists: shared by modules that look for files before
 * making them (certificates, system packages). Internal to src.
 *
 * @module
 */

/**
 * True when `path` exists, false when it does not.
 *
 * Requires `--allow-read` for the path.
 *
 * @throws any error of stat other than "not found" (a permission denied is not an answer)
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
