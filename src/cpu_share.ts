/**
 * The CPU share of a migration that does in two threads what QEMU does in
 * three per guest.
 *
 * On a host whose cores are busy with the gang's own vCPUs, the scheduler
 * shares the CPU out per thread. QEMU's best method, multifd with its
 * default 2 channels, migrates N guests with N migration threads and 2N
 * channel threads (which compress); gangway's sender does that work in two
 * threads, its page work and zstd, which at nice 0 get a fraction of the
 * CPU among busy guests (at the paper's 24 guests its first round crawled
 * while QEMU's kept up; at 4 busy guests round 1 was CPU-bound). Raising
 * the priority by the gang's size gives the two the weight of those 3N
 * ordinary threads ({@linkcode guestsWeight}): the share QEMU would have,
 * no more. The target's agent claims the same for the receiving end while
 * a gang lasts ({@linkcode releaseCpuShare}); the guests it starts run at
 * the priority it had before ({@linkcode normalPriorityPrefix}). A guest
 * that is switching over is paused, and its QEMUs' work (saving, then
 * loading, its device state; `cont`) is all of what is left of its
 * downtime: they borrow the migration's weight until then
 * ({@linkcode lendCpuShare}).
 *
 * A weight is a share of the CPU over time, not a prompt start: a thread
 * that wakes waits for a busy core's thread to end its time slice (1.4 ms
 * on two cores), and the migration's threads wake thousands of times a
 * round, each time its page work waits for zstd, the link or the other
 * end. At the paper's 24 guests on two cores the sender's thread waited
 * 0.4 ms a wake-up for a core on average, 1.8 s of an 8.8 s round 1, and
 * zstd's thread and the agent's as long. So the claim also gives the
 * threads the shortest slice ({@linkcode SHORTEST_SLICE_US}): on waking
 * they take the core at once, and their share stays what the weight says.
 *
 * @module
 */
import { getPriority, setPriority } from "node:os";
import { setThreadPriorities, SHORTEST_SLICE_US } from "./native/thread_priority.ts";

/** Threads QEMU's multifd migration runs per guest: its migration thread and 2 channels. */
const QEMU_THREADS_PER_GUEST = 3;

/** Threads of a gangway process that do its bulk work: its main thread and zstd's. */
const OWN_BUSY_THREADS = 2;

/**
 * The weight, in ordinary threads, each thread of a migration of `guests`
 * guests claims: QEMU's threads for them shared by gangway's two (1.5 a
 * guest).
 */
export function guestsWeight(guests: number): number {
  return guests * QEMU_THREADS_PER_GUEST / OWN_BUSY_THREADS;
}

/** Ratio of CPU weights between two neighbouring nice values (the kernel's sched_prio_to_weight). */
const WEIGHT_STEP = 1.25;

/** The most this raises the priority: the guests must keep some CPU. */
const MOST_RAISE = 15;

/**
 * The nice value whose CPU weight is that of `threads` ordinary threads:
 * 0 for one, -3 for 2, -6 for 4, -14 for 24, never below -15.
 */
export function niceForThreads(threads: number): number {
  if (!(threads >= 1)) throw new RangeError(`Cannot weigh ${threads} threads: need at least 1`);
  const raise = Math.round(Math.log(threads) / Math.log(WEIGHT_STEP));
  return 0 - Math.min(raise, MOST_RAISE); // 0 - 0 is 0, not -0
}

/** How far claimCpuShare raised this process's priority above the one it started with. */
let raisedBy = 0;

/**
 * Sets every thread of the process to `nice` and `sliceUs` (with
 * `--allow-ffi`), else leaves them: the calling thread has the nice value
 * already. Threads made before the claim (Deno's own, the C library's scan
 * helpers and compression jobs) would otherwise keep the priority they
 * were made with, behind the guests' vCPUs; threads made later inherit
 * their maker's.
 */
function allThreadsTo(nice: number, sliceUs: number): void {
  try {
    setThreadPriorities(nice, { sliceUs });
  } catch {
    // No --allow-ffi, or no library: the calling thread's weight is what there is.
  }
}

/**
 * Gives the process (Deno's main thread: the page work, and the C
 * library's threads, where zstd and the scans' helpers run) the CPU weight
 * {@linkcode guestsWeight} gives a migration of `guests` guests, if it
 * may (root, or CAP_SYS_NICE) and has less.
 *
 * Requires `--allow-sys=getPriority,setPriority` (without it, nothing
 * changes), and `--allow-ffi` for threads other than the calling one.
 *
 * @returns the nice value now, and whether it was raised
 */
export function claimCpuShare(guests: number): { nice: number; raised: boolean } {
  let now = 0;
  try {
    now = getPriority();
    // No guests, no migration threads to weigh against.
    if (!(guests >= 1)) return { nice: now, raised: false };
    const wanted = niceForThreads(guestsWeight(guests));
    if (now <= wanted) return { nice: now, raised: false };
    setPriority(wanted);
    const nice = getPriority();
    raisedBy += now - nice;
    allThreadsTo(nice, SHORTEST_SLICE_US);
    return { nice, raised: true };
  } catch {
    // Not allowed (not root, or no --allow-sys): the migration runs as it is, only slower on a
    // busy host.
    return { nice: now, raised: false };
  }
}

/**
 * The command prefix that starts a program at the priority this process
 * had before {@linkcode claimCpuShare} raised it (a guest must not inherit
 * the migration's weight): `nice -n N`, or nothing when nothing was raised.
 * Its threads keep the claim's short slice until {@linkcode lendCpuShare}
 * gives their priority back.
 */
export function normalPriorityPrefix(): string[] {
  return raisedBy > 0 ? ["nice", "-n", String(raisedBy)] : [];
}

/**
 * Gives back what {@linkcode claimCpuShare} raised: the process's threads
 * run at the priority it started with again (a long-lived process, such
 * as the target agent, between gangs).
 */
export function releaseCpuShare(): void {
  if (raisedBy === 0) return;
  try {
    setPriority(getPriority() + raisedBy);
    raisedBy = 0;
    allThreadsTo(getPriority(), 0);
  } catch {
    // Lowering one's own priority is always allowed; without --allow-sys nothing was raised.
  }
}

/**
 * Gives every thread of process `pid` this process's priority (and the
 * shortest slice), when that is higher than the process's own, until the
 * returned function gives it back the nice value it had, with the kernel's
 * default slice (a QEMU switching a paused guest over, whose threads would
 * otherwise wait behind the running guests' vCPUs: its guest's downtime;
 * a destination started after a claim, whose slice it inherited, ends
 * with the default one). Changes nothing when not allowed (not root, no
 * `--allow-sys` or `--allow-ffi`) or when the process is gone.
 *
 * @returns gives the process its own priority back (once; safe to call again)
 */
export function lendCpuShare(pid: number): () => void {
  let lent: number, had: number;
  try {
    lent = getPriority();
    had = getPriority(pid);
    if (had <= lent) return () => {};
  } catch {
    return () => {}; // not allowed, or the process ended: it runs as it was
  }
  let given = false;
  const giveBack = () => {
    if (given) return;
    given = true;
    try {
      setThreadPriorities(had, { pid });
    } catch {
      // The process ended meanwhile (a source that quit).
    }
  };
  try {
    setThreadPriorities(lent, { pid, sliceUs: SHORTEST_SLICE_US });
  } catch {
    giveBack(); // some threads may have been set before one failed
    return () => {};
  }
  return giveBack;
}
