/**
 * What a gang migration checks and watches of its source guests before
 * and while their RAM moves: their run states, their exits, and which of
 * their pages their writes dirtied.
 *
 * @module
 */
import type { QemuGuest } from "./qemu/guest.ts";
import type { RamBackend } from "./qemu/ram_backend.ts";
import { softDirtySupported } from "./native/pagemap.ts";
import {
  type DirtyTracker,
  mappingAddress,
  pagesOf,
  rescanEverything,
  SoftDirtyTracker,
} from "./plan/dirty_tracking.ts";

/**
 * An abort signal that follows `signals` and also aborts when a source
 * QEMU exits, until disposed of.
 */
export function stopWhenSourceExits(
  sources: readonly QemuGuest[],
  signals: readonly (AbortSignal | undefined)[],
): { signal: AbortSignal } & Disposable {
  const exits = new AbortController();
  let watching = true;
  for (const source of sources) {
    source.exited.then(() => {
      if (watching) {
        exits.abort(new Error(`The QEMU of guest "${source.name}" exited during the migration`));
      }
    }, () => {});
  }
  return {
    signal: AbortSignal.any([...signals.filter((signal) => signal !== undefined), exits.signal]),
    [Symbol.dispose]() {
      watching = false;
    },
  };
}

/** What to do about a guest in a state that cannot move, by QEMU's run state. */
const CANNOT_MOVE: Record<string, string> = {
  prelaunch: "it was started with -S and never ran (QMP `cont` starts it)",
  postmigrate:
    "a migration of it ended: it may run elsewhere now; if it did not move, QMP `cont` runs it " +
    "(then `stop` pauses it)",
};

/**
 * Which guests were paused before the migration began: they move paused,
 * as QEMU's own migration moves them.
 *
 * @throws Error naming a guest neither running nor paused (never started, shut down, crashed,
 * migrating or migrated)
 */
export async function pausedAlready(sources: readonly QemuGuest[]): Promise<boolean[]> {
  return await Promise.all(sources.map(async (source) => {
    const { status } = await source.status();
    if (status === "running") return false;
    if (status === "paused") return true;
    const what = CANNOT_MOVE[status] ?? "only a running or paused guest moves";
    throw new Error(`Cannot migrate guest "${source.name}": it is ${status}; ${what}`);
  }));
}

/**
 * Soft-dirty tracking of QEMU's own mappings of the guests' RAM where the
 * kernel has it; otherwise every round re-reads every page.
 */
export async function trackerFor(
  sources: readonly QemuGuest[],
  rams: readonly RamBackend[],
): Promise<DirtyTracker> {
  if (!softDirtySupported()) return rescanEverything;
  const mapped = await Promise.all(sources.map(async (source, i) => ({
    pid: source.pid,
    address: await mappingAddress(source.pid, rams[i]!.path),
    pages: pagesOf(rams[i]!.size),
  })));
  return new SoftDirtyTracker(mapped);
}
