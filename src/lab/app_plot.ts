/**
 * The application's view as a figure: the gang's throughput second by
 * second (host time, from each method's migration start), one line per
 * method, each method's migration window shaded in its colour. Needs no
 * permissions.
 *
 * @module
 */
import type { LabResult } from "./experiment.ts";
import { lineChart } from "./plot.ts";

/**
 * Draws the throughput of every method of a run whose workload reports
 * its work (`pgbench`, `web`).
 *
 * @param result The experiment
 * @returns A standalone SVG document, or undefined when no method has an application view
 *
 * @example
 * ```ts
 * import { applicationChart } from "./app_plot.ts";
 * import type { LabResult } from "./experiment.ts";
 *
 * declare const result: LabResult;
 * const svg = await applicationChart(result);
 * if (svg) await Deno.writeTextFile("application.svg", svg);
 * ```
 */
export async function applicationChart(result: LabResult): Promise<string | undefined> {
  const viewed = result.methods.filter((m) => m.application);
  if (viewed.length === 0) return undefined;
  const { config } = result;
  const unit = config.workload === "web" ? "requests" : "transactions";
  return await lineChart({
    title: `Throughput of the ${config.workload} workload around the migration`,
    subtitle: `${config.guests} guests x ${config.memoryMiB} MiB, link ${result.link}; ` +
      "shaded: each method's migration (its TMT); host time",
    xLabel: "Seconds from the migration's start",
    yLabel: `${unit} per second (whole gang)`,
    series: viewed.map((m) => ({
      name: m.method,
      // Each second's throughput at its middle.
      points: m.application!.series.map((p) => ({ x: p.t + 0.5, y: p.tps })),
    })),
    bands: viewed.map((m) => ({
      series: m.method,
      from: 0,
      to: m.application!.migrationSeconds,
    })),
    points: false,
  });
}
