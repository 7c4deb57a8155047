/**
 * Connecting to a unix socket with an error that says whose it is.
 *
 * @module
 */
import { errorMessage } from "../_errors.ts";

/**
 * Connects to the unix socket at `path`.
 *
 * Requires `--allow-read` and `--allow-write` (the socket).
 *
 * @throws Error `Cannot reach the migration socket of guest "NAME": why`
 */
export async function connectUnix(path: string, guest: string): Promise<Deno.UnixConn> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (error) {
    const why = errorMessage(error);
    throw new Error(`Cannot reach the migration socket of guest "${guest}" (${path}): ${why}`);
  }
}
