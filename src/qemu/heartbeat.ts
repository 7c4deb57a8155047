/**
 * Reads the test guest's heartbeat from its serial log: the guest prints
 * `gangway-heartbeat COUNTER checksum-STATUS CHECKS` about once a second.
 *
 * @module
 */
import { delay } from "../_delay.ts";

/** What the guest's random blob looked like at its last check. */
export type ChecksumStatus = "ok" | "bad" | "pending";

/** One heartbeat line. */
export interface Heartbeat {
  /** Heartbeats since boot; it continues across a migration. */
  counter: number;
  /** Result of the latest checksum check (`pending` before the first). */
  checksum: ChecksumStatus;
  /** Checksum checks done since boot. */
  checks: number;
}

/** Options of {@linkcode waitForHeartbeat}. */
export interface WaitForHeartbeatOptions {
  /** Wait for a counter greater than this. Default 0 (any heartbeat). */
  after?: number;
  /** Give up after this long. Default 60000 ms. */
  timeoutMs?: number;
  /** How often to read the log. Default 200 ms. */
  pollMs?: number;
  /** Returns a reason to give up early (e.g. "QEMU exited"), or undefined. */
  abortReason?: () => string | undefined;
}

const LINE = /gangway-heartbeat (\d+) checksum-(ok|bad|pending) (\d+)/;

/**
 * Parses every heartbeat in a serial log. Torn lines (the guest moved
 * mid-line, or a kernel message cut in) are skipped.
 *
 * @example
 * ```ts
 * parseHeartbeats("gangway-heartbeat 3 checksum-ok 1\r\n"); // [{ counter: 3, ... }]
 * ```
 */
export function parseHeartbeats(text: string): Heartbeat[] {
  const beats: Heartbeat[] = [];
  for (const line of text.split("\n")) {
    const match = LINE.exec(line);
    if (!match) continue;
    beats.push({
      counter: Number(match[1]),
      checksum: match[2] as ChecksumStatus,
      checks: Number(match[3]),
    });
  }
  return beats;
}

/**
 * The last heartbeat in a serial log, or undefined when there is none (or
 * no log yet).
 *
 * Requires `--allow-read`.
 */
export async function readHeartbeat(serialLog: string): Promise<Heartbeat | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(serialLog);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  return parseHeartbeats(text).at(-1);
}

/**
 * Polls a serial log until a heartbeat with a counter above `after` appears.
 *
 * Requires `--allow-read`.
 *
 * @throws Error when none comes in time or `abortReason` gives a reason
 */
export async function waitForHeartbeat(
  serialLog: string,
  options: WaitForHeartbeatOptions = {},
): Promise<Heartbeat> {
  const after = options.after ?? 0;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const beat = await readHeartbeat(serialLog);
    if (beat && beat.counter > after) return beat;
    const why = options.abortReason?.() ??
      (performance.now() > deadline ? `none in ${timeoutMs} ms` : undefined);
    if (why !== undefined) {
      const last = beat ? `last was ${beat.counter}` : "none seen yet";
      throw new Error(`Cannot see a heartbeat after ${after} in "${serialLog}": ${why} (${last})`);
    }
    await delay(options.pollMs ?? 200);
  }
}

/** What a Debian guest's workload driver printed when its load started, or why it did not. */
export interface WorkloadStart {
  /** The workload (`pgbench`, `web`). */
  mode: string;
  /** The rest of the line: `scale=4`, `file=64k`. */
  detail: string;
}

const WORKLOAD_LINE = /gangway-workload (\S+) (running|failed)(?::? ?(.*))?/;

/**
 * Polls a serial log until the guest's workload driver says its load runs
 * (`gangway-workload MODE running ...`): pgbench has filled its tables,
 * nginx answers.
 *
 * Requires `--allow-read`.
 *
 * @throws Error when the driver says it failed, or nothing comes in time
 */
export async function waitForWorkload(
  serialLog: string,
  options: Omit<WaitForHeartbeatOptions, "after"> = {},
): Promise<WorkloadStart> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const text = await Deno.readTextFile(serialLog).catch((error) => {
      if (error instanceof Deno.errors.NotFound) return "";
      throw error;
    });
    const match = text.split("\n").map((line) => WORKLOAD_LINE.exec(line)).find((m) => m);
    if (match?.[2] === "running") return { mode: match[1]!, detail: (match[3] ?? "").trim() };
    const why = match ? `it failed: ${(match[3] ?? "").trim()}` : options.abortReason?.() ??
      (performance.now() > deadline ? `none in ${timeoutMs} ms` : undefined);
    if (why !== undefined) {
      throw new Error(`Cannot see the workload start in "${serialLog}": ${why}`);
    }
    await delay(options.pollMs ?? 500);
  }
}
