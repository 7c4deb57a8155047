/**
 * The priority of every thread of a process (ffi/priority.c): its nice
 * value and its time slice. Linux keeps both per thread, and
 * `os.setPriority()` sets one thread's nice value only. Deno asks for
 * `--allow-all` to list /proc/PID/task; the C library lists it itself.
 *
 * @module
 */
import { native } from "./library.ts";
import { check } from "./errno.ts";

/** The shortest time slice Linux gives a thread (0.1 ms, since 6.12): it takes a core at once on waking. */
export const SHORTEST_SLICE_US = 100;

/** Options of {@linkcode setThreadPriorities}. */
export interface ThreadPriorityOptions {
  /** The process (default: this one). */
  pid?: number;
  /**
   * Each thread's time slice in microseconds, from
   * {@linkcode SHORTEST_SLICE_US} (Linux 6.12 on; older kernels ignore
   * it). Default 0: the kernel's own.
   */
  sliceUs?: number;
}

/**
 * Sets the nice value and time slice of every thread of a process.
 * Requires `--allow-ffi` (and CAP_SYS_NICE to raise a priority).
 *
 * @returns how many threads were set
 */
export function setThreadPriorities(nice: number, options: ThreadPriorityOptions = {}): number {
  const { pid = 0, sliceUs = 0 } = options;
  return check(
    native().gw_set_thread_priorities(pid, nice, sliceUs),
    pid === 0
      ? `Cannot set the threads' priority to ${nice}`
      : `Cannot set the priority of process ${pid}'s threads to ${nice}`,
  );
}
