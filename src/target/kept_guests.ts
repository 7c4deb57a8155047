/**
 * The guests that moved to an agent's host and run there: kept after
 * their gang ended, or found when the agent started (a previous agent's).
 * The agent no longer holds their QMP socket; it removes their RAM file
 * and run directory once their QEMU exits. Internal to src/target.
 *
 * @module
 */
import { join } from "node:path";
import type { Heartbeat } from "../qemu/heartbeat.ts";
import type { DestinationState } from "../qemu/destination.ts";
import { QmpClient } from "../qemu/qmp.ts";
import { readHeartbeat } from "../qemu/heartbeat.ts";
import { isRunning, killAndWait } from "../_processes.ts";
import { pathExists } from "../_path_exists.ts";
import { type GangDestination, RESUMED_MARK } from "./agent_gang.ts";

/** A guest that moved here and runs, as the agent reports it. */
export interface KeptGuest {
  /** The guest's name. */
  name: string;
  /** Its QEMU's process id. */
  pid: number;
  /** Its QMP socket on this host. */
  qmpPath: string;
  /** Its serial log on this host. */
  serialLog: string;
  /** Its RAM file on this host. */
  ramPath: string;
  /** False once its QEMU has exited. */
  alive: boolean;
  /** Its last heartbeat, when it prints them. */
  heartbeat?: Heartbeat;
}

/** How often the agent looks whether a guest it found at start-up (not its child) still runs. */
const FOUND_POLL_MS = 1_000;

/** A guest that moved here and runs, as the agent keeps track of it. */
interface KeptEntry {
  name: string;
  pid: number;
  /** Its run directory (QMP socket, serial log), removed once it exits. */
  runDir: string;
  serialLog: string;
  ramPath: string;
  /** False once its QEMU has exited. */
  alive(): boolean;
}

/** Where an agent's guests and their files are, and its log. */
export interface KeptPlaces {
  /** Directory of the RAM files. */
  dir: string;
  /** The agent's run directory (`RUN_DIR/guests/NAME`: a guest's sockets and logs). */
  runDir: string;
  /** Directory of copied disks' overlays. */
  diskDir: string;
  /** Receives the agent's events. */
  log: (event: { event: string; [field: string]: unknown }) => void;
}

/** The guests that moved here and run (see the module). */
export class KeptGuests {
  readonly #places: KeptPlaces;
  readonly #entries = new Map<string, KeptEntry>();
  /** Looks after the guests found at start-up, which are not the agent's children. */
  #watch: ReturnType<typeof setInterval> | undefined;

  /** None yet: {@linkcode keep} and {@linkcode recoverLeftovers} add them. */
  constructor(places: KeptPlaces) {
    this.#places = places;
  }

  /** Whether a guest of this name runs here. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /**
   * Keeps destinations that took over their guest: lets go of their QMP
   * socket and removes their files once their QEMU exits.
   */
  async keep(destinations: readonly GangDestination[]): Promise<KeptGuest[]> {
    const entries: KeptEntry[] = [];
    for (const { guest, runDir } of destinations) {
      const entry: KeptEntry = {
        name: guest.name,
        pid: guest.pid,
        runDir,
        serialLog: guest.serialLog,
        ramPath: guest.ramPath,
        alive: () => guest.alive,
      };
      this.#entries.set(guest.name, entry);
      entries.push(entry);
      const exited = guest.exited;
      await guest.detach();
      exited.then(() => this.#forget(entry));
    }
    return await Promise.all(entries.map((entry) => this.#describe(entry)));
  }

  /** The guests that moved here and still run (or just exited). */
  async list(): Promise<KeptGuest[]> {
    return await Promise.all([...this.#entries.values()].map((entry) => this.#describe(entry)));
  }

  /** A guest that exited: its RAM file and run directory go (a copied disk stays: its disk). */
  async #forget(entry: KeptEntry): Promise<void> {
    if (this.#entries.get(entry.name) !== entry) return;
    this.#entries.delete(entry.name);
    await Deno.remove(entry.ramPath).catch(() => {});
    await Deno.remove(entry.runDir, { recursive: true }).catch(() => {});
    this.#places.log({ event: "exited", guest: entry.name });
  }

  /**
   * What a guest that moved here does now: asked over its QMP socket for a
   * moment (QMP serves one client: while another holds it, the status is
   * "unknown").
   *
   * @returns undefined when no such guest moved here
   */
  async state(name: unknown): Promise<DestinationState | undefined> {
    const kept = typeof name === "string" ? this.#entries.get(name) : undefined;
    if (!kept) return undefined;
    const heartbeat = await readHeartbeat(kept.serialLog).catch(() => undefined);
    if (!kept.alive()) return { alive: false, status: "exited", running: false, heartbeat };
    try {
      const qmp = await QmpClient.connect(join(kept.runDir, `${kept.name}.qmp`), {
        guest: kept.name,
      });
      try {
        const { status, running } = await qmp.execute<{ status: string; running: boolean }>(
          "query-status",
        );
        return { alive: true, status, running, heartbeat };
      } finally {
        await qmp.close();
      }
    } catch {
      return { alive: kept.alive(), status: "unknown", running: false, heartbeat };
    }
  }

  /**
   * Cleans up after an agent of this run directory that died during a
   * gang: destinations that never took over their guest are killed and
   * their files removed. Guests that moved here earlier are left alone and
   * kept track of (listed in `guests`, their files removed once they
   * exit); one that exited while no agent ran has its files removed now.
   *
   * Requires `--allow-all` (other processes' /proc files), as the agent has.
   *
   * @returns The names of the destinations removed
   */
  async recoverLeftovers(): Promise<string[]> {
    const guestsDir = join(this.#places.runDir, "guests");
    const removed: string[] = [];
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(guestsDir));
    } catch {
      return removed; // no gang ever ran here
    }
    for (const { name, isDirectory } of entries) {
      if (!isDirectory) continue;
      const runDir = join(guestsDir, name);
      // Found by its command line, not by QMP (a busy QMP socket must not make it look gone), nor
      // by program name (a QEMU started as another program, --qemu-binary, is one too).
      const pid = await pidServing(join(runDir, `${name}.qmp`));
      if (await pathExists(join(runDir, RESUMED_MARK), { followLinks: false })) {
        // It took over its guest: whatever it does now (paused, QMP held by someone), it is one.
        // Its files are where the agent put them (agent_gang.ts), never where a command line
        // says: they are removed once it exits.
        const entry: KeptEntry = {
          name,
          pid: pid ?? 0,
          runDir,
          serialLog: join(runDir, `${name}.serial.log`),
          ramPath: join(this.#places.dir, name),
          // Until the watch sees it gone (and forgets it): not the agent's child, so not waited for.
          alive: () => true,
        };
        this.#entries.set(name, entry);
        this.#places.log({ event: "found", guest: name, pid });
        continue;
      }
      if (pid !== undefined) await killAndWait([pid]);
      await Deno.remove(join(this.#places.dir, name)).catch(() => {});
      await Deno.remove(runDir, { recursive: true }).catch(() => {});
      await Deno.remove(join(this.#places.diskDir, name), { recursive: true }).catch(() => {});
      removed.push(name);
    }
    if (removed.length > 0) this.#places.log({ event: "recovered", removed });
    await this.#watchFound();
    return removed;
  }

  /** Forgets the found guests that exited, now and every {@linkcode FOUND_POLL_MS}. */
  async #watchFound(): Promise<void> {
    const found = [...this.#entries.values()];
    if (found.length === 0) return;
    const check = async () => {
      for (const entry of found) {
        if (this.#entries.get(entry.name) !== entry) continue; // forgotten already
        const qmpPath = join(entry.runDir, `${entry.name}.qmp`);
        // Forgotten (its RAM file removed) only when surely gone: in doubt, it runs.
        if (await servesQmp(entry.pid, qmpPath) === false) await this.#forget(entry);
      }
    };
    await check();
    this.#watch = setInterval(check, FOUND_POLL_MS);
    Deno.unrefTimer(this.#watch);
  }

  /** Stops watching the found guests (the agent stops; they run on). */
  close(): void {
    clearInterval(this.#watch);
  }

  async #describe(entry: KeptEntry): Promise<KeptGuest> {
    return {
      name: entry.name,
      pid: entry.pid,
      qmpPath: join(entry.runDir, `${entry.name}.qmp`),
      serialLog: entry.serialLog,
      ramPath: entry.ramPath,
      alive: entry.alive(),
      heartbeat: await readHeartbeat(entry.serialLog).catch(() => undefined),
    };
  }
}

/**
 * Whether the QEMU of this pid still runs (not a zombie), is the agent's
 * own (its user's: another user's process naming the socket is not), and
 * is the one of this QMP socket (not a later process that got its pid).
 * Read from /proc, without running anything: it is asked every second.
 * Undefined when it runs but /proc cannot be read (Deno reads another
 * process's /proc files only with `--allow-all`): it cannot be told.
 */
export async function servesQmp(pid: number, qmpPath: string): Promise<boolean | undefined> {
  if (pid <= 0 || !isRunning(pid)) return false;
  try {
    if ((await Deno.stat(`/proc/${pid}`)).uid !== Deno.uid()) return false;
    const argv = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    const qmp = `-qmp\0unix:${qmpPath}`;
    return argv.includes(`${qmp},`) || argv.includes(`${qmp}\0`);
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? false : undefined;
  }
}

/** The process whose command line serves this QMP socket, looked for among all processes. */
async function pidServing(qmpPath: string): Promise<number | undefined> {
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (Number.isInteger(pid) && await servesQmp(pid, qmpPath) === true) return pid;
  }
  return undefined;
}
