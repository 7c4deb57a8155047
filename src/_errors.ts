/**
 * An error in words, whatever was thrown: shared by every layer (messages
 * that name what failed and why). Internal to src.
 *
 * @module
 */

/** The message of an Error, or the text of anything else thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
