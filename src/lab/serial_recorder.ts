/**
 * Records the workload lines guests print on their serial consoles, each
 * stamped with the host's clock when the host read it: the raw material of
 * the application's view (app_view.ts). A guest's console moves with it,
 * so each guest is followed in its source's log and then in its
 * destination's, wherever that is (on host B: through `/proc/PID/root`).
 *
 * @module
 */
import type { ArrivedLine } from "./app_view.ts";
import { wallClockMs } from "./_time.ts";
import { delay } from "../_delay.ts";

/** How often the logs are read: the resolution of the arrival times. */
const DEFAULT_POLL_MS = 50;
/** Bytes read at once from a log. */
const READ_BYTES = 64 * 1024;
/** Only the workloads' own lines are kept (heartbeats and kernel messages are not). */
const KEPT_LINE = /gangway-(pgbench|latency|web) /;
/** Longest line kept whole; a longer one is no report (and bounds the memory a guest can use). */
const MAX_LINE_CHARS = 4096;

/** The identity of a log that turned out to be one already followed. */
const DUPLICATE = "duplicate";

/** Options of {@linkcode SerialRecorder.follow}. */
export interface FollowOptions {
  /**
   * Skip what the log holds now (a source's boot and its workload's
   * start-up): only lines arriving from now on count.
   * Default false (a destination's log is read from its start).
   */
  fromEnd?: boolean;
}

/** One log of one guest, read as it grows. */
interface TailedLog {
  path: string;
  /** Where reading starts: the log's size when it was followed with `fromEnd`, else 0. */
  offset: number;
  file?: Deno.FsFile;
  /** The file's device and inode once open: the same file followed by two paths is read once. */
  identity?: string;
  decoder: TextDecoder;
  partial: string;
}

/**
 * Follows serial logs and keeps every workload line with the host time it
 * was read at. Poll-based: a log on another host's mount namespace, or
 * not made yet, is read as soon as it can be opened.
 *
 * Requires `--allow-read` of the logs.
 *
 * @example
 * ```ts
 * import { SerialRecorder } from "./serial_recorder.ts";
 *
 * const recorder = SerialRecorder.start();
 * recorder.follow("vm1", "/tmp/vm1.serial.log", { fromEnd: true });
 * // ... the migration ...
 * recorder.follow("vm1", "/proc/4242/root/run/vm1.serial.log");
 * const lines = await recorder.stop(); // Map { "vm1" => [{ atMs, text }, ...] }
 * ```
 */
export class SerialRecorder {
  readonly #logs = new Map<string, TailedLog[]>();
  readonly #lines = new Map<string, ArrivedLine[]>();
  readonly #stop = new AbortController();
  readonly #pollMs: number;
  readonly #startedMs: number;
  #loop: Promise<void> = Promise.resolve();
  #stoppedMs: number | undefined;

  private constructor(pollMs: number) {
    this.#pollMs = pollMs;
    this.#startedMs = wallClockMs();
  }

  /**
   * Starts recording (nothing is followed yet).
   *
   * @param pollMs How often the logs are read. Default 50 ms
   * @returns The recorder; call {@linkcode stop} to end it
   */
  static start(pollMs = DEFAULT_POLL_MS): SerialRecorder {
    const recorder = new SerialRecorder(pollMs);
    recorder.#loop = recorder.#run();
    return recorder;
  }

  /** When recording started, in ms since the epoch. */
  get startedMs(): number {
    return this.#startedMs;
  }

  /** When recording stopped, in ms since the epoch (undefined while it runs). */
  get stoppedMs(): number | undefined {
    return this.#stoppedMs;
  }

  /**
   * Follows one more log of a guest (its destination's after its
   * source's). A log that does not exist yet is opened when it appears.
   *
   * @param guest The guest's name
   * @param path The log's path, as this process sees it
   * @param options Whether to skip what it already holds
   */
  follow(guest: string, path: string, options: FollowOptions = {}): void {
    if (this.#stoppedMs !== undefined) return;
    const logs = this.#logs.get(guest) ?? [];
    if (logs.some((log) => log.path === path)) return;
    logs.push({
      path,
      offset: options.fromEnd ? sizeNow(path) : 0,
      decoder: new TextDecoder(),
      partial: "",
    });
    this.#logs.set(guest, logs);
    if (!this.#lines.has(guest)) this.#lines.set(guest, []);
  }

  /** The lines of a guest recorded so far, in arrival order. */
  linesSoFar(guest: string): readonly ArrivedLine[] {
    return this.#lines.get(guest) ?? [];
  }

  /** The paths followed for a guest, in order. */
  paths(guest: string): string[] {
    return (this.#logs.get(guest) ?? []).map((log) => log.path);
  }

  /**
   * Reads the logs one last time, closes them and stops; safe to call twice.
   *
   * @returns Each guest's lines in arrival order, by guest name, in the order they were followed
   */
  async stop(): Promise<Map<string, ArrivedLine[]>> {
    if (this.#stoppedMs === undefined) {
      this.#stop.abort();
      await this.#loop;
      await this.#readAll();
      this.#stoppedMs = wallClockMs();
      for (const log of [...this.#logs.values()].flat()) log.file?.close();
    }
    return this.#lines;
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      await this.#readAll();
      await delay(this.#pollMs, this.#stop.signal).catch(() => {});
    }
  }

  async #readAll(): Promise<void> {
    for (const [guest, logs] of this.#logs) {
      for (const log of logs) await this.#read(guest, log, logs);
    }
  }

  /** Reads what a log gained since the last read; each complete line is stamped now. */
  async #read(guest: string, log: TailedLog, logs: readonly TailedLog[]): Promise<void> {
    if (log.identity === DUPLICATE) return;
    if (!log.file) {
      let file: Deno.FsFile;
      try {
        file = await Deno.open(log.path, { read: true });
      } catch {
        return; // not there yet (a destination not started), or gone
      }
      const { dev, ino } = await file.stat();
      const identity = `${dev}:${ino}`;
      if (logs.some((other) => other.identity === identity)) {
        // Another path to a log already followed (host B's file through another process's root).
        file.close();
        log.identity = DUPLICATE;
        return;
      }
      log.file = file;
      log.identity = identity;
      await file.seek(log.offset, Deno.SeekMode.Start);
    }
    const buffer = new Uint8Array(READ_BYTES);
    let text = "";
    while (true) {
      const count = await log.file.read(buffer);
      if (count === null || count === 0) break;
      text += log.decoder.decode(buffer.subarray(0, count), { stream: true });
    }
    if (text === "") return;
    const atMs = wallClockMs();
    const lines = (log.partial + text).split("\n");
    log.partial = lines.pop()!.slice(-MAX_LINE_CHARS);
    const kept = this.#lines.get(guest)!;
    for (const line of lines) {
      if (line.length <= MAX_LINE_CHARS && KEPT_LINE.test(line)) {
        kept.push({ atMs, text: line.replace(/\r$/, "") });
      }
    }
  }
}

/** A file's size now, or 0 when it is not there. */
function sizeNow(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}
