/**
 * Ending processes and telling whether they still run: shared by the lab
 * (a run's processes) and the target agent (a dead agent's leftover
 * destinations). Internal to src.
 *
 * @module
 */
import process from "node:process";
import { delay } from "./_delay.ts";

/**
 * Whether a process with this pid exists. When it cannot be told (no
 * permission to ask), the answer is yes: a process in doubt is kept.
 */
export function isAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    process.kill(pid, 0); // signal 0: checks the pid, sends nothing
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code !== "ESRCH";
  }
}

/**
 * Alive and not a zombie waiting for its parent (state Z in
 * `/proc/PID/stat`). Read, not asked of `ps`: the agent asks it every
 * second of each guest it found at start-up. Deno lets only `--allow-all`
 * read another process's /proc files: without it, a live process counts
 * as running (in doubt, kept).
 *
 * Requires `--allow-run` (and `--allow-all` to tell a zombie).
 */
export function isRunning(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The state follows the command's name, in parentheses, which may hold any character.
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch (error) {
    // Gone since isAlive asked; any other failure (not --allow-all: NotCapable) says nothing.
    return !(error instanceof Deno.errors.NotFound);
  }
}

/**
 * Sends SIGKILL, ignoring a process that is already gone.
 *
 * Requires `--allow-run`.
 */
export function killQuietly(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * Kills processes at once (SIGKILL) and waits until they are gone, at most
 * `timeoutMs`.
 *
 * Requires `--allow-run` (sends signals) and `--allow-read` (/proc).
 *
 * @returns the pids still alive after the wait
 */
export async function killAndWait(pids: readonly number[], timeoutMs = 5_000): Promise<number[]> {
  for (const pid of pids) killQuietly(pid);
  const deadline = performance.now() + timeoutMs;
  let alive = pids.filter(isRunning);
  while (alive.length > 0 && performance.now() < deadline) {
    await delay(50);
    alive = alive.filter(isRunning);
  }
  return alive;
}
