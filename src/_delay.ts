/**
 * Waiting a while, or less when told to stop: shared by the transfer
 * layer's bandwidth pacer and the accept loop's back-off. Internal to src.
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
