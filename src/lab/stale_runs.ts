/**
 * Other lab runs on this host: those still running (a second run would
 * disturb their measurements), and what those that crashed left behind
 * (their QEMUs, RAM directories and run directories; `netns_stale.ts`
 * removes their namespaces).
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { listDir, removeTree } from "./_files.ts";
import { killAndWait, namedQemus } from "./_processes.ts";
import { isAlive, isRunning } from "../_processes.ts";
import { removeStaleDirs } from "../_stale_dirs.ts";

/**
 * The names a lab run gives what it makes, from its id (this process's pid,
 * a dash, hex digits): the one place they are spelled, so that the clean-up
 * below finds what `LabSession.open` made.
 */
export const labRunNames = {
  /** Its QEMUs' names begin with this. */
  qemuPrefix: (id: string) => `lab-${id}-`,
  /** Its RAM files' directory, in /dev/shm. */
  ramDir: (id: string) => join(RAM_PARENT, dirName(id)),
  /** Its run directory's prefix in the temporary directory (Deno.makeTempDir adds a suffix). */
  runDirPrefix: (id: string) => `${dirName(id)}-`,
};

/** Where lab runs keep their RAM directories. */
const RAM_PARENT = "/dev/shm";
/** The name of a lab run's RAM directory, and the start of its run directory's. */
const dirName = (id: string) => `gangway-lab-${id}`;

/**
 * What matches a name made by `name` from any lab run's id (its pid, a
 * dash, hex digits) at the start of a string, the pid captured; `whole`
 * when nothing may follow.
 */
function idPattern(name: (id: string) => string, whole: boolean): RegExp {
  const [before, after] = name("\0").split("\0").map((part) =>
    part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  );
  return new RegExp(`^${before}(\\d+)-[0-9a-f]+${after}${whole ? "$" : ""}`);
}
const QEMU_NAME = idPattern(labRunNames.qemuPrefix, false);
const RAM_DIR = idPattern(dirName, true);
const RUN_DIR = idPattern(labRunNames.runDirPrefix, false);

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
    const match = QEMU_NAME.exec(q.name);
    return match !== null && dead(Number(match[1]));
  });
  removed += staleQemus.length;
  await killAndWait(staleQemus.map((q) => q.pid));
  for (const name of await listDir(RAM_PARENT)) {
    const match = RAM_DIR.exec(name);
    if (match && dead(Number(match[1]))) {
      await removeTree(join(RAM_PARENT, name));
      removed++;
    }
  }
  removed += (await removeStaleDirs(tmpdir(), RUN_DIR)).length;
  return removed;
}

/** A lab run of another process that still runs. */
export interface LiveLabRun {
  pid: number;
  /** Its run directory. */
  runDir: string;
}

/**
 * The lab runs of other processes that still run on this host, found by
 * their run directories in the temporary directory. A directory whose pid
 * now belongs to a process that is not Deno's (the run was killed and its
 * pid reused) is no run; a process whose name cannot be read counts as one
 * (in doubt, the caller is told).
 *
 * Requires `--allow-read` (the temporary directory, /proc) and
 * `--allow-env` (TMPDIR).
 */
export async function liveLabRuns(): Promise<LiveLabRun[]> {
  const runs: LiveLabRun[] = [];
  for (const name of await listDir(tmpdir())) {
    const pid = Number(RUN_DIR.exec(name)?.[1]);
    if (!pid || pid === Deno.pid || !isRunning(pid) || !isDeno(pid)) continue;
    runs.push({ pid, runDir: join(tmpdir(), name) });
  }
  return runs;
}

/** Whether a process is Deno (lab runs are), or cannot be told. */
function isDeno(pid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).startsWith("deno");
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound);
  }
}
