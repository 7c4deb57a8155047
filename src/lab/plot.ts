/**
 * The lab's figures as standalone SVG: line and grouped bar charts of a
 * few named series, drawn by Vega-Lite and rendered by Vega without a
 * browser, a DOM or a canvas. Needs no permissions.
 *
 * @module
 */
import * as vega from "npm:vega@6.4.0";
import { compile, type TopLevelSpec } from "npm:vega-lite@6.5.0";

/** One measurement: y at x, with an optional range (min..max of repeats). */
export interface PlotPoint {
  /** Position on the x axis (a number of guests, a memory size...). */
  x: number;
  /** The value (seconds, bytes...). */
  y: number;
  /** Lower end of the range drawn around y, if any. */
  low?: number;
  /** Upper end of the range drawn around y, if any. */
  high?: number;
}

/** A named series: one method of migration, say. */
export interface PlotSeries {
  /** Its name in the legend, e.g. "gangway", "qemu", "qemu-zstd". */
  name: string;
  /** Its points, in any order. */
  points: readonly PlotPoint[];
}

/** What a chart shows. */
export interface ChartOptions {
  /** Title above the chart. */
  title: string;
  /** A second line under the title, e.g. the link and the guests. */
  subtitle?: string;
  /** Title of the x axis. */
  xLabel: string;
  /** Title of the y axis. */
  yLabel: string;
  /** The series, in legend order; each gets its own colour. */
  series: readonly PlotSeries[];
  /** Width of the plotting area in pixels. Default 480. */
  width?: number;
  /** Height of the plotting area in pixels. Default 300. */
  height?: number;
}

/** A stretch of the x axis shaded in a series' colour (a method's migration window, say). */
export interface PlotBand {
  /** The series whose colour it takes. */
  series: string;
  /** Where it starts on the x axis. */
  from: number;
  /** Where it ends on the x axis. */
  to: number;
}

/** Options of {@linkcode lineChart}. */
export interface LineChartOptions extends ChartOptions {
  /** "log" for x values that grow by factors (memory sizes). Default "linear". */
  xScale?: "linear" | "log";
  /** Stretches of the x axis to shade, behind the lines. */
  bands?: readonly PlotBand[];
  /** Draw a marker at each point. Default true. */
  points?: boolean;
}

/** How strongly a band is shaded: light, so that the lines over it stay readable. */
const BAND_OPACITY = 0.15;

/** Most x values that still get a tick each. */
const MAX_TICKS_AT_VALUES = 12;

/** A row of the chart's data: one point of one series. */
interface Row {
  series: string;
  x: number;
  y: number;
  low?: number;
  high?: number;
}

/**
 * A line chart: one line with point markers per series, over a numeric
 * x axis, with the points' ranges as error bars.
 *
 * @param options Titles and series
 * @returns A standalone SVG document
 * @throws Error naming the chart when the series are empty, share a name,
 * or hold numbers that cannot be drawn
 *
 * @example
 * ```ts
 * const svg = await lineChart({
 *   title: "Total migration time vs guest memory",
 *   xLabel: "Guest memory (MiB)",
 *   yLabel: "Seconds",
 *   xScale: "log",
 *   series: [{ name: "gangway", points: [{ x: 256, y: 1.2 }, { x: 1024, y: 3.9 }] }],
 * });
 * await Deno.writeTextFile("tmt_memory.svg", svg);
 * ```
 */
export async function lineChart(options: LineChartOptions): Promise<string> {
  const rows = checkedRows(options);
  if (options.xScale === "log" && rows.some((row) => row.x <= 0)) {
    throw new Error(`Cannot draw chart "${options.title}": a log x axis needs x above 0`);
  }
  const log = options.xScale === "log";
  const x = {
    field: "x",
    type: "quantitative",
    title: options.xLabel,
    // Just the measured range, with room for the point markers at its ends.
    scale: {
      type: log ? "log" : "linear",
      nice: false,
      padding: 16,
      ...(log ? {} : { zero: false }),
    },
    axis: xAxis(rows),
  } as const;
  const bands = checkedBands(options);
  const bandLayer = {
    data: { values: bands },
    mark: { type: "rect", opacity: BAND_OPACITY },
    encoding: { x: { field: "from", type: "quantitative" }, x2: { field: "to" } },
  };
  const point = options.points === false ? {} : { point: { size: 50 } };
  return await render(options, rows, [
    ...(bands.length > 0 ? [bandLayer] : []),
    { mark: { type: "line", ...point }, encoding: { x, y: yEncoding(options) } },
    rangeLayer(x),
  ]);
}

/** The bands, checked: finite ends, and a series the chart has. */
function checkedBands(options: LineChartOptions): PlotBand[] {
  const names = new Set(seriesNames(options));
  for (const band of options.bands ?? []) {
    if (!names.has(band.series) || !Number.isFinite(band.from) || !Number.isFinite(band.to)) {
      throw new Error(
        `Cannot draw chart "${options.title}": a band needs finite ends and one of the series`,
      );
    }
  }
  return [...options.bands ?? []];
}

/**
 * A grouped bar chart: the x values become categories (sorted), with one
 * bar per series side by side in each, and the points' ranges as error
 * bars.
 *
 * @param options Titles and series
 * @returns A standalone SVG document
 * @throws Error naming the chart when the series are empty, share a name,
 * or hold numbers that cannot be drawn
 *
 * @example
 * ```ts
 * const svg = await barChart({
 *   title: "Total migration time vs number of guests",
 *   xLabel: "Guests",
 *   yLabel: "Seconds",
 *   series: [
 *     { name: "gangway", points: [{ x: 1, y: 2.1 }, { x: 4, y: 5.0 }] },
 *     { name: "qemu", points: [{ x: 1, y: 2.4 }, { x: 4, y: 9.6 }] },
 *   ],
 * });
 * ```
 */
export async function barChart(options: ChartOptions): Promise<string> {
  const rows = checkedRows(options);
  const x = {
    field: "x",
    type: "ordinal",
    title: options.xLabel,
    axis: { labelAngle: 0 },
  } as const;
  const xOffset = { field: "series", type: "nominal", sort: seriesNames(options) } as const;
  return await render(options, rows, [
    { mark: { type: "bar" }, encoding: { x, xOffset, y: yEncoding(options) } },
    rangeLayer(x, xOffset),
  ]);
}

/**
 * Ticks at the measured x values when there are few of them (1, 2, 4, 8
 * guests; 256, 512, 1024 MiB), which also keeps a log axis readable.
 */
function xAxis(rows: Row[]): { values?: number[]; format?: string } {
  const values = [...new Set(rows.map((row) => row.x))].sort((a, b) => a - b);
  const integers = values.every(Number.isInteger);
  return {
    ...(values.length <= MAX_TICKS_AT_VALUES ? { values } : {}),
    ...(integers ? { format: "d" } : {}),
  };
}

/** Validates the series and flattens them into rows, in series order. */
function checkedRows(options: ChartOptions): Row[] {
  const fail = (reason: string) => new Error(`Cannot draw chart "${options.title}": ${reason}`);
  if (options.series.length === 0) throw fail("no series given");
  const names = new Set<string>();
  const rows: Row[] = [];
  for (const { name, points } of options.series) {
    if (names.has(name)) throw fail(`two series are named "${name}"`);
    names.add(name);
    for (const { x, y, low, high } of points) {
      if (![x, y, low ?? 0, high ?? 0].every(Number.isFinite)) {
        throw fail(`series "${name}" has a point that is not a finite number`);
      }
      rows.push({ series: name, x, y, low, high });
    }
  }
  return rows;
}

function seriesNames(options: ChartOptions): string[] {
  return options.series.map((series) => series.name);
}

function yEncoding(options: ChartOptions) {
  return { field: "y", type: "quantitative", title: options.yLabel } as const;
}

/**
 * Error bars from low to high, drawn only for points that have both; in a
 * bar chart, `xOffset` puts each over its own bar.
 */
function rangeLayer(x: object, xOffset?: object) {
  return {
    transform: [{ filter: "isValid(datum.low) && isValid(datum.high)" }],
    mark: { type: "rule", strokeWidth: 1.5 },
    encoding: {
      x,
      ...(xOffset ? { xOffset } : {}),
      y: { field: "low", type: "quantitative" },
      y2: { field: "high" },
      color: { value: "#333" },
    },
  } as const;
}

/** Compiles the layers into a Vega view and renders it to SVG headlessly. */
async function render(options: ChartOptions, rows: Row[], layer: object[]): Promise<string> {
  // The cast: Vega-Lite's spec types are deep unions that pieces built
  // apart cannot be matched to; tests/lab_plot_test.ts checks the output.
  const spec = {
    title: options.subtitle === undefined
      ? options.title
      : { text: options.title, subtitle: options.subtitle },
    width: options.width ?? 480,
    height: options.height ?? 300,
    background: "white",
    data: { values: rows },
    encoding: {
      color: { field: "series", type: "nominal", title: null, sort: seriesNames(options) },
    },
    layer,
    // Generic font names only: the SVG must not depend on fonts it lacks.
    config: { font: "sans-serif", legend: { orient: "right" } },
  } as unknown as TopLevelSpec;
  // Warnings (say, a range layer with nothing to draw) are not for the
  // console of a lab run; errors still throw.
  const compiled = compile(spec, { logger: vega.logger(vega.Error) }).spec;
  // renderer "none": no canvas or DOM is needed; toSVG() builds the markup.
  const view = new vega.View(vega.parse(compiled), { renderer: "none", logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
