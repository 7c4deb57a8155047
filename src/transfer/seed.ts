/**
 * Hash seeds. A migration hashes pages with a fresh random seed so that no
 * guest can prepare pages whose hashes collide with another guest's.
 *
 * @module
 */

/** A random 64-bit seed from the system's CSPRNG. */
export function randomSeed(): bigint {
  return crypto.getRandomValues(new BigUint64Array(1))[0]!;
}
