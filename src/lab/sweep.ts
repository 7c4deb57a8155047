/**
 * Sweeps: the paper's figures from our own measurements. One experiment
 * per number of guests (Figures 2 and 3: TMT and traffic against the
 * number of guests) or per guest size with one guest (Figure 4: dedup
 * inside a single guest), written out as JSON, SVG plots and a Markdown
 * summary.
 *
 * @module
 */
import { join } from "node:path";
import { type LabConfig, type LabResult, runLab } from "./experiment.ts";
import type { LabMethod, MethodResult } from "./measurement.ts";
import { barChart, lineChart, type PlotSeries } from "./plot.ts";
import { applicationChart } from "./app_plot.ts";
import { formatApplication, ramWords } from "./summary.ts";
import { gangwayOf, goalVerdicts, labJson, ratioBase, ratiosOf } from "./report.ts";
import { knownQemuIssue, lostGuests, lostTotals } from "./lost_guests.ts";
import type { LabSession } from "./session.ts";

/** What a sweep varies. */
export type SweepAxis = "guests" | "memory";

/** A sweep's experiments, one per value. */
export interface SweepResult {
  /** What varies. */
  axis: SweepAxis;
  /** One experiment per value, in the order given. */
  points: LabResult[];
}

/**
 * Runs a sweep: an experiment for each number of guests (of the base
 * config's size), or for each guest size in MiB with one guest.
 *
 * Requires what `runLab` requires.
 *
 * @param session The lab session
 * @param base Everything but what varies
 * @param axis What varies
 * @param values Numbers of guests, or sizes in MiB
 * @returns The experiments
 * @throws Error when an experiment fails
 *
 * @example
 * ```ts
 * import { runSweep, writeSweepFiles } from "./sweep.ts";
 * import { DEFAULT_LAB_CONFIG } from "./experiment.ts";
 * import { LabSession } from "./session.ts";
 *
 * await using lab = await LabSession.open();
 * const sweep = await runSweep(lab, DEFAULT_LAB_CONFIG, "guests", [1, 2, 4, 8]);
 * await writeSweepFiles("lab-results", [sweep], "deno task lab -- --sweep-guests 1,2,4,8");
 * ```
 */
export async function runSweep(
  session: LabSession,
  base: LabConfig,
  axis: SweepAxis,
  values: readonly number[],
): Promise<SweepResult> {
  const points: LabResult[] = [];
  for (const [i, value] of values.entries()) {
    const config = sweepPoint(base, axis, value);
    session.say(
      `sweep ${axis} ${i + 1}/${values.length}: ${config.guests} guests of ${config.memoryMiB} MiB`,
    );
    const point = await runLab(session, config);
    // A sweep's figures and table need every method at every point.
    const failed = point.failed?.[0];
    if (failed) throw new Error(`Cannot sweep: ${failed.method} did not complete: ${failed.error}`);
    points.push(point);
  }
  return { axis, points };
}

/**
 * The experiment of one point of a sweep: `value` guests of the base's
 * size, or one guest of `value` MiB.
 *
 * @param base Everything but what varies
 * @param axis What varies
 * @param value A number of guests, or a size in MiB
 * @returns The point's experiment
 */
export function sweepPoint(base: LabConfig, axis: SweepAxis, value: number): LabConfig {
  return axis === "guests" ? { ...base, guests: value } : { ...base, guests: 1, memoryMiB: value };
}

/** The figures of each sweep: file, what it shows, how it is drawn. */
const FIGURES: Record<
  SweepAxis,
  { file: string; title: string; what: "tmt" | "traffic" | "downtime" }[]
> = {
  guests: [
    {
      file: "fig2-tmt-vs-guests.svg",
      title: "Total migration time vs number of guests",
      what: "tmt",
    },
    {
      file: "fig3-traffic-vs-guests.svg",
      title: "Bytes on the link vs number of guests",
      what: "traffic",
    },
    {
      file: "downtime-vs-guests.svg",
      title: "Worst guest's downtime vs number of guests",
      what: "downtime",
    },
  ],
  memory: [
    {
      file: "fig4-tmt-vs-memory.svg",
      title: "Total migration time of one guest vs its size",
      what: "tmt",
    },
    {
      file: "traffic-vs-memory.svg",
      title: "Bytes on the link for one guest vs its size",
      what: "traffic",
    },
  ],
};

/** The application's view of a single run (`pgbench`, `web`). */
const APPLICATION_FIGURE = "application.svg";

/** The application's view of one point of a sweep. */
function applicationFigure(axis: SweepAxis, point: LabResult): string {
  return `application-${xOf(axis, point)}${axis === "guests" ? "-guests" : "-mib"}.svg`;
}

const Y_LABEL = { tmt: "TMT (s)", traffic: "Bytes on the link (MB)", downtime: "Downtime (ms)" };

/**
 * Writes the sweeps' files into a directory: `guests.json` / `memory.json`
 * (the JSON report of every experiment), the SVG figures, and
 * `summary.md` with the figures' numbers in tables.
 *
 * Requires `--allow-write` (the directory) and `--allow-read`.
 *
 * @param dir The output directory (made if missing)
 * @param sweeps The sweeps
 * @param command The command that ran them
 * @returns The paths written
 */
export async function writeSweepFiles(
  dir: string,
  sweeps: readonly SweepResult[],
  command: string,
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const written: string[] = [];
  const write = async (name: string, text: string) => {
    const path = join(dir, name);
    await Deno.writeTextFile(path, text);
    written.push(path);
  };
  for (const sweep of sweeps) {
    const document = {
      sweep: sweep.axis,
      command,
      points: sweep.points.map((point) => labJson(point, command)),
    };
    await write(`${sweep.axis}.json`, JSON.stringify(document, null, 2) + "\n");
    for (const figure of FIGURES[sweep.axis]) {
      await write(figure.file, await drawFigure(sweep, figure.what, figure.title));
    }
    for (const point of sweep.points) {
      const svg = await applicationChart(point);
      if (!svg) continue;
      const one = sweeps.length === 1 && sweep.points.length === 1;
      await write(one ? APPLICATION_FIGURE : applicationFigure(sweep.axis, point), svg);
    }
  }
  await write("summary.md", sweepSummary(sweeps, command));
  return written;
}

/**
 * Where each method's guests kept their RAM over the sweeps' points: "gangway
 * shared file, huge pages, qemu anonymous"; a method whose points differ (a
 * large gang's RAM files in small pages, where huge ones did not fit) names
 * each kind with its points.
 */
function guestRam(sweeps: readonly SweepResult[]): string {
  const kinds = new Map<LabMethod, Map<string, string[]>>();
  for (const point of sweeps.flatMap((sweep) => sweep.points)) {
    const where = `${point.config.guests} x ${point.config.memoryMiB} MiB`;
    for (const m of point.methods) {
      const byWords = kinds.get(m.method) ?? new Map<string, string[]>();
      kinds.set(m.method, byWords);
      byWords.set(ramWords(m), [...byWords.get(ramWords(m)) ?? [], where]);
    }
  }
  return [...kinds].map(([method, byWords]) =>
    byWords.size === 1
      ? `${method} ${[...byWords.keys()][0]}`
      : `${method} ${[...byWords].map(([words, at]) => `${words} (${at.join(", ")})`).join("; ")}`
  ).join(", ");
}

/**
 * The Markdown summary of sweeps: setup, a table of each sweep's numbers,
 * links to its figures, the goals where they apply, and per method the
 * guests migrated and lost over every run.
 *
 * Needs no permission.
 *
 * @param sweeps The sweeps
 * @param command The command that ran them
 * @returns Markdown text
 */
export function sweepSummary(sweeps: readonly SweepResult[], command: string): string {
  const first = sweeps[0]?.points[0];
  const lines = ["# Lab results", "", "```sh", command, "```", ""];
  if (first) {
    const c = first.config;
    lines.push(
      `Link ${first.link} (${first.network.description}); ${c.workload} workload, idle ${c.idleSeconds} s; ` +
        `image ${first.image.kernel} + ${first.image.initramfs}; ` +
        (c.kernelArgs.length
          ? `kernel args \`${c.kernelArgs.join(" ")}\`; `
          : "kernel defaults (KASLR on); ") +
        `QEMU ${first.methods[0]?.qemuVersion} under ${first.methods[0]?.accelerator}; ` +
        `guest RAM: ${guestRam(sweeps)}.`,
      "",
      "TMT: first migration started to last guest running at the target. Bytes: the lab link's " +
        "source-to-target counter. Downtime: source paused to destination running (worst guest). " +
        "Ratios: gangway / the fastest QEMU method of the same point (by TMT), named in `against`. " +
        "See docs/lab.md.",
      "",
    );
  }
  for (const sweep of sweeps) {
    const heading = sweep.axis === "guests"
      ? `## Guests of ${first?.config.memoryMiB ?? "?"} MiB (Figures 2 and 3)`
      : "## One guest, growing (Figure 4)";
    lines.push(heading, "");
    for (const figure of FIGURES[sweep.axis]) lines.push(`![${figure.title}](${figure.file})`, "");
    const methods = sweep.points[0]?.methods.map((m) => m.method) ?? [];
    lines.push(
      "| " +
        [
          sweep.axis === "guests" ? "guests" : "MiB",
          ...methods.flatMap((m) => [`${m} MB`, `${m} TMT s`, `${m} downtime ms`]),
          "traffic ratio",
          "TMT ratio",
          "against",
          "resumed",
        ].join(" | ") + " |",
      "|" + " ---: |".repeat(1 + methods.length * 3 + 4),
    );
    for (const point of sweep.points) {
      const base = ratioBase(point);
      const r = base ? ratiosOf(gangwayOf(point), base) : undefined;
      const cells = [
        String(xOf(sweep.axis, point)),
        ...point.methods.flatMap((m) => [
          (m.bytesOnWire / 1e6).toFixed(1),
          m.tmtSeconds.toFixed(2),
          Math.max(...m.downtimeMs).toFixed(0),
        ]),
        r?.traffic.toFixed(2) ?? "-",
        r?.tmt.toFixed(2) ?? "-",
        base?.method ?? "-",
        point.methods.map((m) => `${m.resumed}/${point.config.guests}`).join(", "),
      ];
      lines.push(`| ${cells.join(" | ")} |`);
    }
    lines.push("");
    for (const point of sweep.points) {
      const goals = goalVerdicts(point);
      if (goals.length === 0) continue;
      lines.push(
        `Goals at ${point.config.guests} guests: ` +
          goals.map((g) => `${g.goal}: ${g.measured} (${g.met ? "met" : "missed"})`).join("; ") +
          ".",
        "",
      );
    }
  }
  lines.push(...applicationLines(sweeps));
  lines.push(...keptAlive(sweeps.flatMap((sweep) => sweep.points)));
  return lines.join("\n");
}

/** The section of the application's view (pgbench, web): one line per method of each run. */
function applicationLines(sweeps: readonly SweepResult[]): string[] {
  const lines: string[] = [];
  for (const sweep of sweeps) {
    const one = sweeps.length === 1 && sweep.points.length === 1;
    for (const point of sweep.points) {
      const viewed = point.methods.filter((m) => m.application);
      if (viewed.length === 0) continue;
      const figure = one ? APPLICATION_FIGURE : applicationFigure(sweep.axis, point);
      lines.push(
        `## The application's view, ${point.config.guests} x ${point.config.memoryMiB} MiB, ` +
          `${point.config.workload}`,
        "",
        `![Throughput around the migration](${figure})`,
        "",
        ...viewed.map((m) => `- ${m.method}: ${formatApplication(m.application!)}`),
        "",
      );
    }
  }
  return lines;
}

/** The section that counts, per method over every run, guests migrated and lost. */
function keptAlive(points: readonly LabResult[]): string[] {
  const lines = [
    "## Guests kept alive, over all runs",
    "",
    "| method | runs | guests migrated | guests lost | of which kernel crashes |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...lostTotals(points).map((t) =>
      `| ${t.method} | ${t.runs} | ${t.migrated} | ${t.lost} | ${t.crashed} |`
    ),
    "",
  ];
  const lost = points.flatMap((point) =>
    point.methods.filter((m) => m.resumed < m.checks.length).map((m) =>
      `- ${point.config.guests} x ${point.config.memoryMiB} MiB, ${m.method}: ` +
      lostGuests(m).map((g) => `${g.name}: ${g.reason}`).join("; ")
    )
  );
  if (lost.length > 0) lines.push("Lost guests:", "", ...lost, "");
  const known = new Set(points.flatMap((point) => point.methods.map(knownQemuIssue)));
  for (const issue of known) if (issue) lines.push(`Of the QEMU methods' losses: ${issue}.`, "");
  return lines;
}

function xOf(axis: SweepAxis, point: LabResult): number {
  return axis === "guests" ? point.config.guests : point.config.memoryMiB;
}

function yOf(what: "tmt" | "traffic" | "downtime", m: MethodResult): number {
  if (what === "tmt") return m.tmtSeconds;
  if (what === "traffic") return m.bytesOnWire / 1e6;
  return Math.max(...m.downtimeMs);
}

async function drawFigure(
  sweep: SweepResult,
  what: "tmt" | "traffic" | "downtime",
  title: string,
): Promise<string> {
  const methods: LabMethod[] = sweep.points[0]?.methods.map((m) => m.method) ?? [];
  const series: PlotSeries[] = methods.map((method) => ({
    name: method,
    points: sweep.points.flatMap((point) => {
      const m = point.methods.find((x) => x.method === method);
      return m ? [{ x: xOf(sweep.axis, point), y: yOf(what, m) }] : [];
    }),
  }));
  const first = sweep.points[0];
  const subtitle = first
    ? `${sweep.axis === "guests" ? `${first.config.memoryMiB} MiB guests` : "1 guest"}, ` +
      `${first.config.workload}, idle ${first.config.idleSeconds} s, link ${first.link}`
    : undefined;
  if (sweep.axis === "guests") {
    return await barChart({
      title,
      subtitle,
      xLabel: "Guests migrated at once",
      yLabel: Y_LABEL[what],
      series,
    });
  }
  return await lineChart({
    title,
    subtitle,
    xLabel: "Guest memory (MiB)",
    yLabel: Y_LABEL[what],
    xScale: "log",
    series,
  });
}
