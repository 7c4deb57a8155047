/**
 * What /proc says of processes and their threads, for the tests of CPU
 * priorities.
 */

/** The fields of /proc/.../stat after the command's name: [0] is the state, [1] the parent, [16] the nice value. */
async function statFields(path: string): Promise<string[]> {
  const stat = await Deno.readTextFile(path);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** A process's (or, by its thread id, a thread's) nice value. */
export async function niceOf(id: number): Promise<number> {
  return Number((await statFields(`/proc/${id}/stat`))[16]);
}

/** The nice value of every thread of process `pid`. */
export async function threadNices(pid: number): Promise<number[]> {
  const tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
  return await Promise.all(tasks.map(({ name }) => niceOf(Number(name))));
}

/** The parent of process `pid`, or undefined once it is gone. */
export async function parentOf(pid: number): Promise<number | undefined> {
  const fields = await statFields(`/proc/${pid}/stat`).catch(() => undefined);
  return fields && Number(fields[1]);
}

/** Linux 6.12 on takes a thread's own time slice (sched_attr.sched_runtime); older kernels ignore it. */
export function kernelTakesSlices(): boolean {
  const [major = 0, minor = 0] = Deno.osRelease().split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 12);
}

/** The time slice of every thread of process `pid`, in nanoseconds (`se.slice` of /proc/.../sched). */
export async function threadSlices(pid: number | "self"): Promise<number[]> {
  const tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
  return await Promise.all(tasks.map(async ({ name }) => {
    const sched = await Deno.readTextFile(`/proc/${pid}/task/${name}/sched`);
    return Number(/^se\.slice\s*:\s*(\d+)/m.exec(sched)?.[1]);
  }));
}
