import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { DOMParser, type Element } from "npm:@xmldom/xmldom@0.9.12";
import { barChart, lineChart, type PlotSeries } from "../src/lab/plot.ts";

const GUESTS = [1, 2, 4, 8];
const METHODS: PlotSeries[] = [
  {
    name: "gangway",
    points: GUESTS.map((n) => ({ x: n, y: 1.5 * n, low: 1.4 * n, high: 1.6 * n })),
  },
  { name: "qemu", points: GUESTS.map((n) => ({ x: n, y: 2.5 * n })) },
  { name: "qemu-zstd", points: GUESTS.map((n) => ({ x: n, y: 2 * n })) },
];

/** Parses SVG as strict XML: any error, even one a browser would forgive, fails. */
function parseSvg(svg: string): Element {
  const document = new DOMParser({
    onError: (level, message) => {
      if (level !== "warning") throw new Error(`SVG is not well-formed XML: ${message}`);
    },
  }).parseFromString(svg, "image/svg+xml");
  const root = document.documentElement!;
  assertEquals(root.tagName, "svg");
  assertEquals(root.getAttribute("xmlns"), "http://www.w3.org/2000/svg");
  return root;
}

function texts(root: Element): string[] {
  return Array.from(root.getElementsByTagName("text")).map((text) => text.textContent ?? "");
}

/** The data marks of one kind ("rect" for bars, "symbol" for points) with their labels. */
function markLabels(root: Element, kind: string): string[] {
  const groups = Array.from(root.getElementsByTagName("g"))
    .filter((g) => (g.getAttribute("class") ?? "").split(" ").includes(`mark-${kind}`))
    .filter((g) => (g.getAttribute("class") ?? "").includes("role-mark"));
  return groups.flatMap((g) => Array.from(g.getElementsByTagName("*")))
    .filter((mark) => mark.getAttribute("role") === "graphics-symbol")
    .map((mark) => mark.getAttribute("aria-label") ?? "");
}

/** Nothing that a viewer would fetch: no scripts, images, links or web fonts. */
function assertSelfContained(svg: string): void {
  const external = svg.replaceAll(/xmlns(:xlink)?="http:\/\/www\.w3\.org\/[^"]*"/g, "");
  assert(!/https?:|<script|<image|@import|@font-face|url\(/i.test(external), "SVG refers outside");
}

Deno.test("barChart() draws one bar per point with titles, axis titles and a legend", async () => {
  const svg = await barChart({
    title: "Total migration time vs number of guests",
    subtitle: "1 Gbit/s link",
    xLabel: "Guests",
    yLabel: "Total migration time (s)",
    series: METHODS,
  });
  assertSelfContained(svg);
  const root = parseSvg(svg);
  const words = texts(root);
  for (const text of ["Total migration time vs number of guests", "1 Gbit/s link", "Guests"]) {
    assert(words.includes(text), `missing "${text}" in ${JSON.stringify(words)}`);
  }
  assert(words.includes("Total migration time (s)"));
  for (const { name } of METHODS) assert(words.includes(name), `no legend entry "${name}"`);
  const bars = markLabels(root, "rect");
  assertEquals(bars.length, METHODS.length * GUESTS.length);
  assert(bars.includes("Guests: 8; Total migration time (s): 20; series: qemu"), bars.join("\n"));
  assertEquals(markLabels(root, "rule").length, GUESTS.length); // ranges of gangway only
});

Deno.test("lineChart() draws every point of every series, on a log axis too", async () => {
  const points = [256, 512, 1024, 2048].map((mib) => ({ x: mib, y: mib / 100 }));
  const svg = await lineChart({
    title: "TMT vs guest memory size",
    xLabel: "Guest memory (MiB)",
    yLabel: "Seconds",
    xScale: "log",
    series: [{ name: "gangway", points }, {
      name: "qemu",
      points: points.map((p) => ({ ...p, y: p.y * 2 })),
    }],
  });
  assertSelfContained(svg);
  const root = parseSvg(svg);
  const words = texts(root);
  for (
    const text of ["TMT vs guest memory size", "Guest memory (MiB)", "Seconds", "gangway", "qemu"]
  ) {
    assert(words.includes(text), `missing "${text}" in ${JSON.stringify(words)}`);
  }
  for (const tick of ["256", "512", "1024", "2048"]) {
    assert(words.includes(tick), `no tick ${tick}`);
  }
  const marks = markLabels(root, "symbol");
  assertEquals(marks.length, 8);
  assert(
    marks.includes("Guest memory (MiB): 2048; Seconds: 40.96; series: qemu"),
    marks.join("\n"),
  );
});

Deno.test("charts escape names that are not XML-safe", async () => {
  const svg = await lineChart({
    title: "A <b> & 'c'",
    xLabel: "x < 1",
    yLabel: "y & z",
    series: [{ name: 'qemu "zstd" <fast>', points: [{ x: 1, y: 1 }] }],
  });
  const words = texts(parseSvg(svg));
  for (const text of ["A <b> & 'c'", "x < 1", "y & z", 'qemu "zstd" <fast>']) {
    assert(words.includes(text), `missing "${text}" in ${JSON.stringify(words)}`);
  }
});

Deno.test("charts refuse series they cannot draw, naming the chart", async () => {
  const chart = { title: "TMT", xLabel: "x", yLabel: "y" };
  await assertRejects(
    () => barChart({ ...chart, series: [] }),
    Error,
    'Cannot draw chart "TMT": no series given',
  );
  await assertRejects(
    () => barChart({ ...chart, series: [{ name: "a", points: [] }, { name: "a", points: [] }] }),
    Error,
    'two series are named "a"',
  );
  await assertRejects(
    () => lineChart({ ...chart, series: [{ name: "a", points: [{ x: 1, y: NaN }] }] }),
    Error,
    'series "a" has a point that is not a finite number',
  );
  await assertRejects(
    () => lineChart({ ...chart, xScale: "log", series: [{ name: "a", points: [{ x: 0, y: 1 }] }] }),
    Error,
    "a log x axis needs x above 0",
  );
});
