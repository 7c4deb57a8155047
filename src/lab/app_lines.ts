/**
 * The lines a guest's workload prints on its serial console about the
 * work it completed (src/qemu/_debian_recipes.ts writes the programs that
 * print them), parsed. Pure functions: no permissions needed.
 *
 * - `gangway-pgbench progress: 1796152912.257 s, 123.4 tps, lat 16.234 ms stddev 5.1, 0 failed`:
 *   pgbench's own line each second (`-P 1 --progress-timestamp`): the
 *   guest's clock and the transactions per second since the last line.
 * - `gangway-latency sec=1796152912 n=123 p99_ms=41.250`: the p99 latency
 *   of the transactions that completed in one second of the guest's clock
 *   (from pgbench's per-transaction log).
 * - `gangway-web requests=181 seconds=1.101 p50_ms=17.98 p99_ms=80.35 errors=0 clock=1796152912.257`:
 *   one wrk run against nginx: requests completed in that many seconds,
 *   their p99 latency, and the guest's clock when it ended.
 *
 * @module
 */

/** Work a guest reports having completed, up to the moment its clock says. */
export interface WorkReport {
  /** A report of completed work. */
  kind: "work";
  /** The guest's clock (seconds since the epoch, as the guest sees it) when the report was made. */
  guestClock: number;
  /** Requests or transactions completed per second over the report's interval. */
  rate: number;
  /**
   * Seconds of the guest's clock the report covers, when the line says
   * (wrk); pgbench's lines cover the time since its previous one.
   */
  seconds?: number;
  /** The p99 latency of the report's interval in ms, when the line carries it (wrk). */
  p99Ms?: number;
}

/** The p99 latency of one second of the guest's clock (pgbench). */
export interface LatencyReport {
  /** A report of one second's latency. */
  kind: "latency";
  /** The second of the guest's clock (seconds since the epoch, whole). */
  guestSecond: number;
  /** Transactions completed in it. */
  count: number;
  /** Their p99 latency in ms. */
  p99Ms: number;
}

/** What a workload line reports. */
export type WorkloadReport = WorkReport | LatencyReport;

const PGBENCH = /gangway-pgbench progress: (\d+(?:\.\d+)?) s, (\d+(?:\.\d+)?) tps/;
const LATENCY = /gangway-latency sec=(\d+) n=(\d+) p99_ms=(\d+(?:\.\d+)?)/;
const WEB =
  /gangway-web requests=(\d+) seconds=(\d+(?:\.\d+)?) p50_ms=\S+ p99_ms=(\d+(?:\.\d+)?) errors=\d+ clock=(\d+(?:\.\d+)?)/;

/**
 * Parses one serial line of a workload; anything else (heartbeats, kernel
 * messages, a line torn by the migration) gives undefined.
 *
 * @param line One line of a serial log
 * @returns What it reports, or undefined
 *
 * @example
 * ```ts
 * import { parseWorkloadLine } from "./app_lines.ts";
 *
 * parseWorkloadLine("gangway-pgbench progress: 1796152912.257 s, 123.4 tps, lat 16.2 ms stddev 5.1, 0 failed");
 * // { kind: "work", guestClock: 1796152912.257, rate: 123.4 }
 * ```
 */
export function parseWorkloadLine(line: string): WorkloadReport | undefined {
  const pgbench = PGBENCH.exec(line);
  if (pgbench) return { kind: "work", guestClock: Number(pgbench[1]), rate: Number(pgbench[2]) };
  const latency = LATENCY.exec(line);
  if (latency) {
    return {
      kind: "latency",
      guestSecond: Number(latency[1]),
      count: Number(latency[2]),
      p99Ms: Number(latency[3]),
    };
  }
  const web = WEB.exec(line);
  if (web) {
    const seconds = Number(web[2]);
    if (seconds <= 0) return undefined;
    return {
      kind: "work",
      guestClock: Number(web[4]),
      rate: Number(web[1]) / seconds,
      seconds,
      p99Ms: Number(web[3]),
    };
  }
  return undefined;
}
