/**
 * Linux cgroups and /proc, as much as a CPU throttle needs: where the
 * `cpu` controller is mounted, which cgroup a process is in, how much CPU
 * it used, and writing a cgroup's control files. Deno asks for
 * `--allow-all` to read another process's /proc files and to write under
 * /sys. Internal to src/qemu.
 *
 * @module
 */
import { isAlive } from "../_processes.ts";
import { errorMessage } from "../_errors.ts";

/** Where the `cpu` controller is: a cgroup v2 or v1 hierarchy's mount point. */
export interface CpuHierarchy {
  /** cgroup v2, or a v1 hierarchy of the cpu controller. */
  version: 1 | 2;
  /** Where it is mounted (its root cgroup). */
  mount: string;
}

/** Clock ticks per second of /proc/PID/stat (USER_HZ: 100 on every architecture Linux runs gangway on). */
const TICKS_PER_SECOND = 100;

/** The CPU time a process used so far (user and system, all its threads), or undefined if gone. */
export async function processCpuSeconds(pid: number): Promise<number | undefined> {
  const stat = await readProcFile(pid, "stat");
  if (stat === undefined) return undefined;
  // The fields after the command's name, in parentheses (which may hold anything), from state on.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** A file of /proc/PID, or undefined if the process has exited. */
async function readProcFile(pid: number | "self", name: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(`/proc/${pid}/${name}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && pid !== "self") return undefined;
    throw error;
  }
}

/** Writes a cgroup's control file (never creating one). */
export async function writeControl(group: string, file: string, value: string): Promise<void> {
  try {
    await Deno.writeTextFile(`${group}/${file}`, value, { create: false });
  } catch (error) {
    throw new Error(`Cannot write "${value}" to ${group}/${file}: ${errorMessage(error)}`);
  }
}

/** cgroup v2: gives a cgroup's children the cpu controller (cpu.max), if they have not got it. */
export async function enableCpuBelow(group: string): Promise<void> {
  const enabled = await Deno.readTextFile(`${group}/cgroup.subtree_control`);
  if (!enabled.split(/\s+/).includes("cpu")) {
    await writeControl(group, "cgroup.subtree_control", "+cpu");
  }
}

/**
 * Moves every process of a cgroup to another, or, if that one is gone
 * (systemd removes a scope its processes left), to its nearest parent
 * that is not (the hierarchy's root at most). Processes that exit
 * meanwhile need nothing.
 */
export async function moveProcesses(from: string, to: string): Promise<void> {
  const pids = (await Deno.readTextFile(`${from}/cgroup.procs`).catch(() => ""))
    .split("\n").filter((line) => line !== "");
  let into = to;
  while (!(await isDirectory(into)) && into.lastIndexOf("/") > 0) {
    into = into.slice(0, into.lastIndexOf("/"));
  }
  for (const pid of pids) {
    try {
      await writeControl(into, "cgroup.procs", pid);
    } catch (error) {
      if (isAlive(Number(pid))) throw error;
    }
  }
}

async function isDirectory(path: string): Promise<boolean> {
  return await Deno.stat(path).then((info) => info.isDirectory, () => false);
}

/**
 * Whether every thread of a process is in `own`, the process's cgroup:
 * a process whose threads sit in cgroups of their own (libvirt puts each
 * vCPU thread in one) would lose that placement if moved whole.
 */
export async function threadsTogether(
  pid: number,
  own: string,
  hierarchy: CpuHierarchy,
): Promise<boolean> {
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const group = await processCgroup(pid, hierarchy, `task/${task.name}/cgroup`);
      if (group !== undefined && group !== own) return false; // undefined: the thread ended
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return true;
}

/**
 * The mount of the hierarchy that has the `cpu` controller: cgroup v2
 * where `cpu` is among its controllers, else a v1 hierarchy of `cpu`.
 *
 * @throws Error when there is none
 */
export async function findCpuHierarchy(): Promise<CpuHierarchy> {
  const mounts = parseCgroupMounts(await readProcFile("self", "mountinfo") ?? "");
  for (const mount of mounts.filter((m) => m.version === 2)) {
    const controllers = await Deno.readTextFile(`${mount.mount}/cgroup.controllers`)
      .catch(() => "");
    if (controllers.split(/\s+/).includes("cpu")) return { version: 2, mount: mount.mount };
  }
  const v1 = mounts.find((m) => m.version === 1 && m.controllers.includes("cpu"));
  if (v1) return { version: 1, mount: v1.mount };
  throw new Error("no cgroup hierarchy with the cpu controller is mounted");
}

/** The cgroup mounts of a mountinfo file: version, mount point and (v1) controllers. */
export function parseCgroupMounts(
  text: string,
): { version: 1 | 2; mount: string; controllers: string[] }[] {
  const found = [];
  for (const line of text.split("\n")) {
    // ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    const [before, after] = line.split(" - ");
    if (!before || !after) continue;
    const [fstype, , superOptions = ""] = after.split(" ");
    const mount = unescapeMount(before.split(" ")[4] ?? "");
    if (fstype === "cgroup2") found.push({ version: 2 as const, mount, controllers: [] });
    if (fstype === "cgroup") {
      found.push({ version: 1 as const, mount, controllers: superOptions.split(",") });
    }
  }
  return found;
}

/** mountinfo writes space, tab, newline and backslash in octal (`\040`). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
}

/**
 * The cgroup directory a process is in, in that hierarchy; undefined if
 * it has exited.
 */
export async function processCgroup(
  pid: number,
  hierarchy: CpuHierarchy,
  file = "cgroup",
): Promise<string | undefined> {
  const text = await readProcFile(pid, file);
  if (text === undefined) return undefined;
  const path = cgroupPath(text, hierarchy.version);
  if (path === undefined) {
    throw new Error(`Cannot find process ${pid}'s cgroup of the cpu controller`);
  }
  return path === "/" ? hierarchy.mount : `${hierarchy.mount}${path}`;
}

/** From /proc/PID/cgroup: the path in the v2 hierarchy ("0::PATH"), or in v1's of `cpu`. */
export function cgroupPath(text: string, version: 1 | 2): string | undefined {
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (version === 2 && line.slice(0, first) === "0" && controllers === "") return path;
    if (version === 1 && controllers.split(",").includes("cpu")) return path;
  }
  return undefined;
}
