/**
 * Removes what lab runs that crashed left behind on this host (their
 * QEMUs, RAM directories and run directories; `netns_stale.ts` removes
 * their namespaces).
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { listDir, removeTree } from "./_files.ts";
import { killAndWait, namedQemus } from "./_processes.ts";
import { isAlive } from "../_processes.ts";
import { removeStaleDirs } from "../_stale_dirs.ts";

/**
 * Removes what lab runs whose process is gone left behind: QEMUs named
 * `lab-PID-...`, RAM directories `/dev/shm/gangway-lab-PID-...` and run
 * directories `gangway-lab-PID-...` in the temporary directory (sockets,
 * logs, the target's TLS files). Their namespaces are removed by
 * `LabNetwork.create()`.
 *
 * Requires `--allow-run` (ps, cat, ls, rm), `--allow-env` (TMPDIR),
 * `--allow-read` and `--allow-write` (the temporary directory).
 *
 * @returns How many processes and directories were removed
 */
export async function cleanStaleLabs(): Promise<number> {
  let removed = 0;
  const dead = (pid: number) => !isAlive(pid);
  const staleQemus = (await namedQemus()).filter((q) => {
    const match = /^lab-(\d+)-[0-9a-f]+-/.exec(q.name);
    return match !== null && dead(Number(match[1]));
  });
  removed += staleQemus.length;
  await killAndWait(staleQemus.map((q) => q.pid));
  for (const name of await listDir("/dev/shm")) {
    const match = /^gangway-lab-(\d+)-[0-9a-f]+$/.exec(name);
    if (match && dead(Number(match[1]))) {
      await removeTree(join("/dev/shm", name));
      removed++;
    }
  }
  // Made by Deno.makeTempDir in LabSession.open: `gangway-lab-PID-HEX-` and a suffix of its own.
  removed += (await removeStaleDirs(tmpdir(), /^gangway-lab-(\d+)-[0-9a-f]+-/)).length;
  return removed;
}
