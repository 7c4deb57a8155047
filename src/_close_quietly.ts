/**
 * Closing what may be closed already: the one way, for every connection,
 * listener and file handle that two paths may close.
 *
 * @module
 */

/**
 * Closes a connection, listener or handle that may have closed already (by
 * its peer, or by another path's close): that is no failure.
 */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Closed already.
  }
}
