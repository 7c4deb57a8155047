/**
 * A tmpfs of huge pages for the source guests' RAM files.
 *
 * QEMU's own migration reads a guest's RAM through QEMU's mapping, which
 * the guest has filled; gangway's sender maps the RAM file itself, and its
 * first read of each page is a page fault. On the lab's VMs, whose
 * hypervisor traps those faults, the first read of 512 MiB of tmpfs cost
 * 276-306 ms in 4 KiB pages and 8 ms in 2 MiB ones (docs/design.md, "Huge
 * pages"). A tmpfs mounted with `huge=within_size` backs a file with huge
 * pages (the kernel's `shmem_enabled` setting is for other shared memory,
 * unless it denies them all), as the kernel backs QEMU's anonymous guest
 * RAM with them where QEMU advises them (memory_budget.ts). Where it does,
 * the lab gives guests that keep their RAM in files (gangway's; QEMU's with
 * `--baseline-ram file`) such a tmpfs when the run fits in memory so.
 * Only at the source: on host B, pages written into fresh huge pages made
 * the receiver a second slower in round 1 of the pgbench gang here (likely
 * the hypervisor backing anew each 2 MiB block that free page reporting
 * had handed back; not checked).
 *
 * @module
 */
import { listDir, removeTree } from "./_files.ts";
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
 * Why the kernel refuses a tmpfs huge pages, from the text of its
 * `shmem_enabled` setting (undefined: the file is missing, a kernel without
 * transparent huge pages), or undefined when it does not: the setting in
 * force is the one in brackets, and `deny` refuses them to every tmpfs.
 */
export function shmemRefusal(setting: string | undefined): string | undefined {
  if (setting === undefined) return "the kernel has no transparent huge pages";
  return /\[deny\]/.test(setting) ? `${SHMEM_ENABLED} is "deny"` : undefined;
}

/**
 * Why this host's kernel refuses a tmpfs huge pages ({@linkcode shmemRefusal}
 * of its setting), or undefined when it does not.
 *
 * Requires `--allow-run` (cat).
 */
export async function hugeTmpfsRefused(): Promise<string | undefined> {
  return shmemRefusal(await runTool("cat", [SHMEM_ENABLED]).catch(() => undefined));
}

/**
 * The source host's tmpfs of huge pages of one lab session, at `dir`:
 * mounted on first use, emptied between gangs, and unmounted with the
 * session's RAM directory (`removeTree`).
 */
export class HugePageTmpfs {
  readonly #dir: string;
  readonly #say: (line: string) => void;
  #mounted: Promise<string | undefined> | undefined;
  #closed = false;

  /**
   * @param dir where to mount it (made then)
   * @param say where the reason goes when none can be mounted
   */
  constructor(dir: string, say: (line: string) => void) {
    this.#dir = dir;
    this.#say = say;
  }

  /**
   * The directory, mounted on first use; undefined where none can be (not
   * root, a kernel that refuses them, the session closed), said once.
   *
   * Requires `--allow-run` (cat, mkdir, mount) and root.
   */
  dir(): Promise<string | undefined> {
    this.#mounted ??= this.#mount();
    return this.#mounted;
  }

  /**
   * Removes the files of the gang before, keeping the mount for the next.
   *
   * Requires `--allow-run` (ls, rm).
   */
  async empty(): Promise<void> {
    const dir = await this.#mounted;
    if (!dir) return;
    const names = await listDir(dir);
    if (names.length > 0) await runTool("rm", ["-rf", "--", ...names.map((n) => `${dir}/${n}`)]);
  }

  /**
   * Mounts nothing from now on, and waits for a mount under way: the
   * session removes its RAM directory next, the mount with it.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#mounted;
  }

  async #mount(): Promise<string | undefined> {
    const dir = this.#dir;
    try {
      if (this.#closed) throw new Error("the lab session is closed");
      const refused = await hugeTmpfsRefused();
      if (refused) throw new Error(refused);
      await runTool("mkdir", ["-p", dir]);
      await runTool("mount", ["-t", "tmpfs", "-o", OPTIONS, "gangway-lab-huge", dir]);
    } catch (error) {
      this.#say(`guest RAM files in 4 KiB pages: no tmpfs of huge pages: ${errorMessage(error)}`);
      return undefined;
    }
    if (!this.#closed) return dir;
    await removeTree(dir); // closed meanwhile: the session may have removed its tree already
    return undefined;
  }
}
