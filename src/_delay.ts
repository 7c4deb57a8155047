/**
 * Waiting a while, or less when told to stop, and waiting for a promise
 * no longer than a while: the one way every layer does either (polls,
 * back-offs, the pacer, read and write deadlines). Internal to src.
 *
 * @module
 */

/**
 * Resolves after `ms` milliseconds; rejects with the signal's reason as
 * soon as `signal` aborts (at once if it has already).
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Waits for a promise, or rejects with `error()` after `timeoutMs` (never
 * when undefined). The promise is left running: close what it waits on to
 * end it.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number | undefined,
  error: () => Error,
): Promise<T> {
  if (timeoutMs === undefined) return await promise;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
