/**
 * The few assertions the tests use, in the shape of @std/assert (which
 * lives on JSR, unreachable here), built on node:assert/strict.
 *
 * @module
 */
import nodeAssert from "node:assert/strict";
import { errorMessage } from "../src/_errors.ts";

/** Fails unless value is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Fails unless actual deeply and strictly equals expected. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  nodeAssert.deepEqual(actual, expected, message);
}

/** Fails if actual deeply equals expected. */
export function assertNotEquals<T>(actual: T, expected: T, message?: string): void {
  nodeAssert.notDeepEqual(actual, expected, message);
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = new (...args: any[]) => E;

function checkError<E extends Error>(
  error: unknown,
  errorClass: ErrorClass<E> | undefined,
  includes: string | undefined,
): E {
  if (errorClass && !(error instanceof errorClass)) {
    throw new nodeAssert.AssertionError({
      message: `Expected a ${errorClass.name}, got: ${error}`,
    });
  }
  const message = errorMessage(error);
  if (includes !== undefined && !message.includes(includes)) {
    throw new nodeAssert.AssertionError({
      message: `Expected the error message to include "${includes}", got: "${message}"`,
    });
  }
  return error as E;
}

/** Fails unless fn throws (an errorClass whose message includes `includes`); returns the error. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  errorClass?: ErrorClass<E>,
  includes?: string,
): E {
  try {
    fn();
  } catch (error) {
    return checkError(error, errorClass, includes);
  }
  throw new nodeAssert.AssertionError({ message: "Expected the function to throw" });
}

/** As {@linkcode assertThrows}, for a promise. */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  errorClass?: ErrorClass<E>,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    return checkError(error, errorClass, includes);
  }
  throw new nodeAssert.AssertionError({ message: "Expected the promise to reject" });
}

/**
 * Fails unless two byte arrays are equal, naming the first difference
 * (a deep-equal diff of megabytes would take the test runner's memory).
 */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, label = "bytes"): void {
  if (actual.length !== expected.length) {
    throw new nodeAssert.AssertionError({
      message: `${label}: ${actual.length} bytes, expected ${expected.length}`,
    });
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new nodeAssert.AssertionError({
        message: `${label}: first difference at byte ${i} (page ${Math.floor(i / 4096)}): ${
          actual[i]
        } != ${expected[i]}`,
      });
    }
  }
}
