/**
 * The user's cache directory for gangway: built C libraries, guest images.
 * Internal to src (and ffi/build.ts).
 *
 * @module
 */
import { join } from "node:path";

/** The environment variables that {@linkcode defaultCacheDir} reads, in order. */
export const CACHE_DIR_VARIABLES: readonly string[] = ["GANGWAY_CACHE", "XDG_CACHE_HOME", "HOME"];

/**
 * The cache directory: `$GANGWAY_CACHE`, else `$XDG_CACHE_HOME/gangway`,
 * else `~/.cache/gangway`.
 *
 * Requires `--allow-env` (GANGWAY_CACHE, XDG_CACHE_HOME, HOME).
 *
 * @throws Error when none of the three is set
 */
export function defaultCacheDir(): string {
  const override = Deno.env.get("GANGWAY_CACHE");
  if (override) return override;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "gangway");
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("Cannot find a cache directory: set GANGWAY_CACHE or HOME");
  return join(home, ".cache", "gangway");
}
