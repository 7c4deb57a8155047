/**
 * Slows processes down with a CPU quota (Linux cgroups), as QEMU's
 * auto-converge slows a guest whose pages change faster than its
 * migration sends them: at a throttle of 0.3 a guest gets at most 70% of
 * the CPU time it used before it was first slowed (measured from the
 * throttle's start). Relative to what it used, not to its vCPUs: on a
 * host whose cores are shared out among more vCPUs than it has, a quota
 * of 70% of a vCPU would hold back nothing from a guest that got 40% of
 * one. A process that used less than {@linkcode BUSY_CPUS} of a CPU is
 * left alone (it writes too little to matter, and a quota on its small
 * mean would stretch its bursts many times over); it is measured again at
 * each step. So is one that another throttle holds, or whose threads sit
 * in cgroups of their own (libvirt's vCPUs): moving it whole would undo
 * that ({@linkcode CpuThrottle.leftAlone} says which, and why).
 *
 * Each process gets a cgroup of its own under one made for the
 * migration, at the root of the hierarchy that has the `cpu` controller
 * (cgroup v2's `cpu.max`, or v1's `cpu.cfs_quota_us`). A process moves
 * there only when it is first slowed, and back to the cgroup it came from
 * when it is released; a migration whose rounds converge moves nothing.
 * A watchdog (`sh` in a session of its own, so Ctrl-C does not end it)
 * puts the processes back and removes the cgroups if this process dies
 * first, even by SIGKILL: a migration never leaves its guests slowed.
 *
 * @module
 */
import { isAlive } from "../_processes.ts";
import { errorMessage } from "../_errors.ts";
import {
  type CpuHierarchy,
  enableCpuBelow,
  findCpuHierarchy,
  moveProcesses,
  parseCgroupMounts,
  processCgroup,
  processCpuSeconds,
  threadsTogether,
  writeControl,
} from "./_cgroups.ts";

export { type CpuHierarchy, findCpuHierarchy, parseCgroupMounts };

/** A process to slow down, and how many CPUs it may use at full speed (a guest's vCPUs). */
export interface ThrottledProcess {
  /** The process (a QEMU). */
  pid: number;
  /** CPUs it runs on at full speed: its quota is a share of this many CPUs' time. */
  cpus: number;
}

/** The quota's period, in microseconds (the kernel's default). */
const PERIOD_US = 100_000;
/** A process that used less than this many CPUs is not slowed. */
export const BUSY_CPUS = 0.1;
/** The most a throttle may be: a guest must keep running. */
export const MOST_THROTTLE = 0.99;

/**
 * Undoes what a dead migration left: stdin names, a line each, a cgroup
 * and the one its processes came from ("GROUP ORIGIN": the group, of
 * gangway's making, holds no space; the origin is the rest of the line,
 * spaces and all); "released" says there is nothing to undo. At end of
 * input without it, the processes go back (to the origin's nearest
 * parent if it is gone, as moveProcesses does) and the cgroups are removed.
 */
const WATCHDOG = `trap '' INT TERM HUP PIPE
parent=$1 moved=
while IFS= read -r line; do
  [ "$line" = released ] && exit 0
  moved="$moved$line
"
done
printf '%s' "$moved" | while IFS= read -r line; do
  group=\${line%% *} origin=\${line#* }
  while [ ! -d "$origin" ] && [ "\${origin%/*}" != "" ]; do origin=\${origin%/*}; done
  for pid in $(cat "$group/cgroup.procs"); do echo "$pid" >"$origin/cgroup.procs"; done
done 2>/dev/null
for group in "$parent"/g*; do rmdir "$group"; done 2>/dev/null
rmdir "$parent" 2>/dev/null
exit 0
`;

/** One process's place: its own cgroup, where it came from once moved, and whether it is done. */
interface Slot {
  process: ThrottledProcess;
  group: string;
  /** Its CPU time (seconds) when the throttle started, and when that was (ms); undefined if gone. */
  started?: { cpuSeconds: number; atMs: number };
  /** CPUs it used before it was first slowed: what its quota is a share of. */
  base?: number;
  origin?: string;
  /** Why it is not slowed, if it cannot be. */
  leftAlone?: string;
  released: boolean;
}

/**
 * Processes slowed down by CPU quotas, all to one throttle (0: full
 * speed, up to {@linkcode MOST_THROTTLE}).
 *
 * ```ts ignore
 * await using throttle = await CpuThrottle.start([{ pid: guest.pid, cpus: 1 }]);
 * await throttle.slow(0.2); // if busy, it gets at most 80% of the CPU it used since the start
 * await throttle.release(0); // at full speed, in its own cgroup again
 * ```
 *
 * Requires root (or a delegated cgroup tree) and `--allow-all` (Deno
 * asks for it to read other processes' /proc files and to write under
 * /sys; the watchdog is `setsid sh`).
 */
export class CpuThrottle implements AsyncDisposable {
  readonly #hierarchy: CpuHierarchy;
  readonly #parent: string;
  readonly #slots: Slot[];
  readonly #watchdog: Deno.ChildProcess;
  readonly #tell: WritableStreamDefaultWriter<Uint8Array>;
  #level = 0;
  #ended = false;

  private constructor(
    hierarchy: CpuHierarchy,
    parent: string,
    slots: Slot[],
    watchdog: Deno.ChildProcess,
  ) {
    this.#hierarchy = hierarchy;
    this.#parent = parent;
    this.#slots = slots;
    this.#watchdog = watchdog;
    this.#tell = watchdog.stdin.getWriter();
  }

  /**
   * Makes the cgroups (nothing moves yet) and starts the watchdog.
   *
   * @throws Error saying why, when no hierarchy has the `cpu` controller
   * or its cgroups cannot be made (not root)
   */
  static async start(processes: readonly ThrottledProcess[]): Promise<CpuThrottle> {
    let hierarchy: CpuHierarchy;
    try {
      hierarchy = await findCpuHierarchy();
    } catch (error) {
      throw new Error(`Cannot throttle the guests' CPU: ${errorMessage(error)}`);
    }
    const parent = `${hierarchy.mount}/gangway-throttle-${Deno.pid}-${
      crypto.randomUUID().slice(0, 8)
    }`;
    const slots: Slot[] = [];
    try {
      for (const [i, process] of processes.entries()) {
        const cpuSeconds = await processCpuSeconds(process.pid);
        slots.push({
          process,
          group: `${parent}/g${i}`,
          started: cpuSeconds === undefined ? undefined : { cpuSeconds, atMs: performance.now() },
          released: false,
        });
      }
      if (hierarchy.version === 2) await enableCpuBelow(hierarchy.mount);
      await Deno.mkdir(parent);
      if (hierarchy.version === 2) await enableCpuBelow(parent);
      for (const slot of slots) await Deno.mkdir(slot.group);
    } catch (error) {
      await removeGroups(parent, slots);
      throw new Error(`Cannot throttle the guests' CPU: ${errorMessage(error)}`);
    }
    const watchdog = new Deno.Command("setsid", {
      args: ["sh", "-c", WATCHDOG, "gangway-throttle-watchdog", parent],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    watchdog.unref(); // it outlives a script that forgets to release: its stdin then ends
    return new CpuThrottle(hierarchy, parent, slots, watchdog);
  }

  /** The throttle the processes not yet released run at. */
  get level(): number {
    return this.#level;
  }

  /**
   * Slows every busy process not released to `level` (0 to
   * {@linkcode MOST_THROTTLE}) of the CPU time it used.
   *
   * @returns how many processes are slowed now
   */
  async slow(level: number): Promise<number> {
    if (!(level >= 0 && level <= MOST_THROTTLE)) {
      throw new RangeError(`Cannot throttle to ${level}: between 0 and ${MOST_THROTTLE}`);
    }
    if (this.#ended) throw new Error("The throttle has ended");
    let slowed = 0;
    for (const slot of this.#slots) {
      if (slot.released || slot.leftAlone !== undefined) continue;
      slot.base ??= await busyCpus(slot);
      if (slot.base === undefined) continue;
      if (slot.origin === undefined) await this.#moveIn(slot, level, slot.base);
      else await this.#setQuota(slot, level, slot.base);
      if (slot.origin !== undefined) slowed++;
    }
    this.#level = level;
    return slowed;
  }

  /** The processes that cannot be slowed, and why (each is left as it is). */
  get leftAlone(): { pid: number; reason: string }[] {
    return this.#slots.flatMap((slot) =>
      slot.leftAlone === undefined ? [] : [{ pid: slot.process.pid, reason: slot.leftAlone }]
    );
  }

  /** Lets one process run at full speed again, in the cgroup it came from. */
  async release(index: number): Promise<void> {
    const slot = this.#slots[index];
    if (!slot || slot.released) return;
    slot.released = true;
    if (slot.origin !== undefined) {
      try {
        await moveProcesses(slot.group, slot.origin);
      } catch (error) {
        throw new Error(
          `process ${slot.process.pid} is still throttled in ${slot.group}: ${errorMessage(error)}`,
        );
      }
    }
    await Deno.remove(slot.group).catch(() => {});
  }

  /** Releases every process, removes the cgroups and ends the watchdog. */
  async end(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    let failure: unknown;
    for (let i = 0; i < this.#slots.length; i++) {
      await this.release(i).catch((error) => (failure ??= error));
    }
    await Deno.remove(this.#parent).catch(() => {});
    // A watchdog that is gone has nothing left to undo: it is told nothing.
    if (failure === undefined) await this.#say("released").catch(() => {});
    await this.#tell.close().catch(() => {});
    this.#watchdog.ref(); // unref'd at the start: its end must keep this process waiting now
    await this.#watchdog.status;
    if (failure !== undefined) {
      throw new Error(`Cannot release the guests' CPU throttle: ${errorMessage(failure)}`);
    }
  }

  /** {@linkcode end}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.end();
  }

  async #setQuota(slot: Slot, level: number, base: number): Promise<void> {
    const quota = Math.max(1000, Math.round((1 - level) * base * PERIOD_US));
    if (this.#hierarchy.version === 2) {
      await writeControl(slot.group, "cpu.max", `${quota} ${PERIOD_US}`);
    } else {
      await writeControl(slot.group, "cpu.cfs_period_us", String(PERIOD_US));
      await writeControl(slot.group, "cpu.cfs_quota_us", String(quota));
    }
  }

  /**
   * Moves a process into its cgroup, its quota set, unless moving it whole
   * would misplace it (then it is left alone) or it has exited.
   */
  async #moveIn(slot: Slot, level: number, base: number): Promise<void> {
    const { pid } = slot.process;
    const origin = await processCgroup(pid, this.#hierarchy);
    if (origin === undefined) return; // it has exited: nothing to slow
    if (origin.includes("/gangway-throttle-")) {
      slot.leftAlone = `another migration throttles it (${origin})`;
      return;
    }
    if (!(await threadsTogether(pid, origin, this.#hierarchy))) {
      slot.leftAlone = "its threads are in cgroups of their own (as libvirt places vCPUs)";
      return;
    }
    await this.#setQuota(slot, level, base);
    // Told first: if this process dies right after the move, the watchdog knows where it goes.
    await this.#say(`${slot.group} ${origin}`);
    slot.origin = origin;
    try {
      await writeControl(slot.group, "cgroup.procs", String(pid));
    } catch (error) {
      if (isAlive(pid)) throw error;
    }
  }

  async #say(line: string): Promise<void> {
    try {
      await this.#tell.write(new TextEncoder().encode(`${line}\n`));
    } catch (error) {
      throw new Error(`the throttle's watchdog is gone (${errorMessage(error)})`);
    }
  }
}

/**
 * The CPUs a process used since the throttle started (at most its own
 * count), or undefined when that is under {@linkcode BUSY_CPUS} (or it
 * has exited).
 */
async function busyCpus(slot: Slot): Promise<number | undefined> {
  const now = await processCpuSeconds(slot.process.pid);
  if (now === undefined || slot.started === undefined) return undefined;
  const seconds = (performance.now() - slot.started.atMs) / 1000;
  const used = seconds > 0 ? (now - slot.started.cpuSeconds) / seconds : 0;
  return used >= BUSY_CPUS ? Math.min(used, slot.process.cpus) : undefined;
}

async function removeGroups(parent: string, slots: readonly Slot[]): Promise<void> {
  for (const slot of slots) await Deno.remove(slot.group).catch(() => {});
  await Deno.remove(parent).catch(() => {});
}
