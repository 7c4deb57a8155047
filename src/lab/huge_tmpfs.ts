/**
 * A tmpfs of huge pages for the source guests' RAM files.
 *
 * QEMU's own migration reads a guest's RAM through QEMU's mapping, which
 * the guest has filled; gangway's sender maps the RAM file itself, and its
 * first read of each page is a page fault. On the lab's VMs, whose
 * hypervisor traps those faults, the first read of 512 MiB of tmpfs cost
 * 276-306 ms in 4 KiB pages and 8 ms in 2 MiB ones (docs/design.md, "Huge
 * pages"). A tmpfs mounted with `huge=within_size` backs a file with huge
 * pages (the kernel's `shmem_enabled` setting is for other shared memory),
 * as this kernel backs QEMU's anonymous guest RAM where QEMU advises them
 * (memory_budget.ts): the lab puts gangway's source guests there when the
 * whole gang fits in memory so, as a host that means to move guests fast
 * would. Only the source: on host B, pages written into fresh huge pages
 * made the receiver several times slower here (a second more per round 1 of
 * the pgbench gang), the hypervisor backing each 2 MiB of reported free
 * memory anew.
 *
 * @module
 */
import { runTool } from "./netns_exec.ts";
import { errorMessage } from "../_errors.ts";

/**
 * The mount's options: huge pages within a file's size (a guest's RAM file
 * is its whole size), and as large as memory (a tmpfs's default is half):
 * the lab's memory estimate is what keeps the gang within memory.
 */
const OPTIONS = "huge=within_size,size=100%,mode=0700";
/** Where the kernel says whether shared memory may have huge pages at all. */
const SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/**
 * Why a tmpfs of huge pages cannot be had on this host, or undefined when
 * it can as far as the kernel tells: a kernel without transparent huge
 * pages has no `shmem_enabled`, and `deny` refuses them to every tmpfs.
 *
 * Requires `--allow-run` (cat).
 */
export async function hugeTmpfsRefused(): Promise<string | undefined> {
  let setting: string;
  try {
    setting = await runTool("cat", [SHMEM_ENABLED]);
  } catch {
    return "the kernel has no transparent huge pages";
  }
  // The setting in force is the one in brackets: "always within_size advise [never] deny force".
  return /\[deny\]/.test(setting) ? `${SHMEM_ENABLED} is "deny"` : undefined;
}

/**
 * Makes `dir` and mounts a tmpfs of huge pages on it, for its owner (root)
 * only; `removeTree` unmounts it.
 *
 * Requires `--allow-run` (mkdir, mount) and root.
 *
 * @throws Error saying why it could not be mounted
 */
export async function mountHugeTmpfs(dir: string): Promise<void> {
  try {
    await runTool("mkdir", ["-p", dir]);
    await runTool("mount", ["-t", "tmpfs", "-o", OPTIONS, "gangway-lab-huge", dir]);
  } catch (error) {
    throw new Error(`Cannot mount a tmpfs of huge pages on ${dir}: ${errorMessage(error)}`);
  }
}
