/**
 * The nice value of every thread of a process (ffi/priority.c): Linux
 * keeps one per thread, and `os.setPriority()` sets one thread's only.
 * Deno asks for `--allow-all` to list /proc/PID/task; the C library lists
 * it itself.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/**
 * Sets the nice value of every thread of process `pid` (default: this
 * one). Requires `--allow-ffi` (and CAP_SYS_NICE to raise a priority).
 *
 * @returns how many threads were set
 */
export function setThreadPriorities(nice: number, pid = 0): number {
  return check(
    native().gw_set_thread_priorities(pid, nice),
    pid === 0
      ? `Cannot set the threads' priority to ${nice}`
      : `Cannot set the priority of process ${pid}'s threads to ${nice}`,
  );
}
