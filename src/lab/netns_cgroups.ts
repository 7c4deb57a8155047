/**
 * The cgroup hierarchy of the `cpu` controller, mounted again on a lab
 * host. `ip netns exec` mounts a fresh sysfs over /sys (for the
 * namespace's network devices), which hides /sys/fs/cgroup: a process on
 * a lab host that throttles its guests (auto-converge) mounts the
 * machine's hierarchy there again, as a real host has it, in the private
 * mount namespace `ip netns exec` made for that process (it goes when the
 * process and its children do). The cgroups themselves are the machine's.
 *
 * @module
 */
import { findCpuHierarchy, parseCgroupMounts } from "../qemu/cpu_throttle.ts";
import { errorMessage } from "../_errors.ts";
import { runTool } from "./netns_exec.ts";

/** Where systemd and the kernel's docs mount cgroups. */
const CGROUP_ROOT = "/sys/fs/cgroup";

/**
 * Mounts the `cpu` hierarchy of the machine (as its init sees it) at
 * /sys/fs/cgroup, unless this process sees one already. Root only; needs
 * `--allow-all` (/proc, /sys) and `mount`.
 *
 * @throws Error when the machine has none, or it cannot be mounted
 */
export async function mountCpuCgroupIfHidden(): Promise<void> {
  if (await findCpuHierarchy().then(() => true, () => false)) return;
  const machine = parseCgroupMounts(await Deno.readTextFile("/proc/1/mountinfo"));
  const v1 = machine.find((m) => m.version === 1 && m.controllers.includes("cpu"));
  try {
    if (v1) {
      // A v1 hierarchy mounts again only with the same controllers (and name) as it has.
      const options = v1.controllers.filter((o) => o !== "rw" && o !== "ro").join(",");
      const at = `${CGROUP_ROOT}/${options}`;
      await runTool("mount", ["-t", "tmpfs", "cgroup_root", CGROUP_ROOT]);
      await Deno.mkdir(at);
      await runTool("mount", ["-t", "cgroup", "-o", options, "cgroup", at]);
    } else if (machine.some((m) => m.version === 2)) {
      await runTool("mount", ["-t", "cgroup2", "cgroup2", CGROUP_ROOT]);
    }
    await findCpuHierarchy();
  } catch (error) {
    throw new Error(
      `Cannot mount the machine's cgroup cpu hierarchy on this lab host: ${errorMessage(error)}`,
    );
  }
}
