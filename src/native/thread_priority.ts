/**
 * The nice value of every thread of this process (ffi/priority.c): Linux
 * keeps one per thread, and `os.setPriority()` sets the calling thread's
 * only. Deno asks for `--allow-all` to list /proc/self/task; the C library
 * lists it itself.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/**
 * Sets the nice value of every thread of this process. Requires
 * `--allow-ffi` (and CAP_SYS_NICE to raise a priority).
 *
 * @returns how many threads were set
 */
export function setThreadPriorities(nice: number): number {
  return check(
    native().gw_set_thread_priorities(nice),
    `Cannot set the threads' priority to ${nice}`,
  );
}
