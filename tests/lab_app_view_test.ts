/**
 * The application's view: parsing the workloads' serial lines, and the
 * before/during/after, stall and came-back arithmetic over host arrival
 * times, from made-up lines (no guests are started here); the recorder
 * over files this test writes; the figure.
 */
import { assert, assertEquals } from "./_assert.ts";
import { parseWorkloadLine } from "../src/lab/app_lines.ts";
import { applicationView, type ArrivedLine } from "../src/lab/app_view.ts";
import { SerialRecorder } from "../src/lab/serial_recorder.ts";
import { applicationChart } from "../src/lab/app_plot.ts";
import { formatApplication } from "../src/lab/summary.ts";
import { labJson } from "../src/lab/report.ts";
import { writeSweepFiles } from "../src/lab/sweep.ts";
import { DEFAULT_LAB_CONFIG, type LabResult } from "../src/lab/experiment.ts";
import type { MethodResult } from "../src/lab/measurement.ts";
import { delay } from "../src/_delay.ts";

const CLOCK = 1_796_152_900;

/** pgbench's progress line at guest clock `clock` (seconds since the epoch). */
function progress(clock: number, tps: number): string {
  return `gangway-pgbench progress: ${clock.toFixed(3)} s, ${tps.toFixed(1)} tps, ` +
    `lat 16.234 ms stddev 5.120, 0 failed`;
}

/**
 * One guest running pgbench at `tps`, reporting each second of its clock,
 * paused from host time `pauseAtMs` for `pauseMs` (its clock stops with
 * it), the report due meanwhile arriving late.
 */
function pausedGuest(options: {
  tps: number;
  fromMs: number;
  toMs: number;
  pauseAtMs: number;
  pauseMs: number;
  tpsAfter?: number;
}): ArrivedLine[] {
  const lines: ArrivedLine[] = [];
  let guestClock = CLOCK;
  for (let atMs = options.fromMs + 1000; atMs <= options.toMs;) {
    guestClock += 1;
    const after = atMs > options.pauseAtMs;
    lines.push({
      atMs,
      text: progress(guestClock, after ? options.tpsAfter ?? options.tps : options.tps),
    });
    // The second that holds the pause ends late by the pause.
    const next = atMs + 1000;
    atMs = next > options.pauseAtMs && atMs <= options.pauseAtMs ? next + options.pauseMs : next;
  }
  return lines;
}

Deno.test("parseWorkloadLine() reads pgbench's progress, the p99 lines and wrk's reports", () => {
  assertEquals(parseWorkloadLine(progress(CLOCK + 0.257, 123.4)), {
    kind: "work",
    guestClock: CLOCK + 0.257,
    rate: 123.4,
  });
  assertEquals(parseWorkloadLine("gangway-latency sec=1796152912 n=123 p99_ms=41.250"), {
    kind: "latency",
    guestSecond: 1796152912,
    count: 123,
    p99Ms: 41.25,
  });
  const web = parseWorkloadLine(
    "gangway-web requests=200 seconds=1.250 p50_ms=17.98 p99_ms=80.35 errors=0 clock=1796152912.5",
  );
  assertEquals(web, {
    kind: "work",
    guestClock: 1796152912.5,
    rate: 160,
    seconds: 1.25,
    p99Ms: 80.35,
  });
});

Deno.test("parseWorkloadLine() ignores heartbeats, torn lines and empty runs", () => {
  assertEquals(parseWorkloadLine("gangway-heartbeat 12 checksum-ok 4"), undefined);
  assertEquals(parseWorkloadLine("ress: 1796152912.257 s, 123.4 tps, lat 16.2 ms"), undefined);
  assertEquals(parseWorkloadLine("gangway-pgbench progress: 17961"), undefined);
  assertEquals(
    parseWorkloadLine("gangway-web requests=0 seconds=0.000 p50_ms=0 p99_ms=0 errors=4 clock=5"),
    undefined,
  );
  assertEquals(parseWorkloadLine("gangway-web failed: wrk gave no report"), undefined);
});

Deno.test("applicationView() cuts the throughput at the migration's start and end", () => {
  // 100 tps before, a 2 s pause inside a migration from 10 s to 14 s, 50 tps after it.
  const lines = pausedGuest({
    tps: 100,
    tpsAfter: 50,
    fromMs: 0,
    toMs: 24_000,
    pauseAtMs: 12_000,
    pauseMs: 2000,
  });
  const view = applicationView([lines], {
    recordStartMs: 0,
    startMs: 10_000,
    endMs: 14_000,
    recordEndMs: 24_000,
  });
  assertEquals(view.guests, 1);
  assertEquals(view.before, { seconds: 10, tps: 100, p99Ms: null, worstP99Ms: null });
  // During: 2 s at 100 tps and 2 s paused out of 4 s.
  assertEquals(view.during.tps, 50);
  assertEquals(view.after.tps, 50);
  assertEquals(view.longestStallMs, 2000);
  assert(view.cameBack);
  assertEquals(view.migrationSeconds, 4);
  const second = (t: number) => view.series.find((p) => p.t === t)?.tps;
  assertEquals(second(-1), 100);
  assertEquals(second(2), 0, "the paused seconds complete nothing");
  assertEquals(second(3), 0);
  assertEquals(second(5), 50);
  assertEquals(view.series[0]!.t, -10);
  assertEquals(view.series.at(-1)!.t, 13);
});

Deno.test("applicationView() adds the guests up and reports the longest stall of any", () => {
  const window = { recordStartMs: 0, startMs: 5000, endMs: 8000, recordEndMs: 12_000 };
  const short = pausedGuest({ tps: 10, fromMs: 0, toMs: 12_000, pauseAtMs: 6000, pauseMs: 300 });
  const long = pausedGuest({ tps: 30, fromMs: 0, toMs: 12_000, pauseAtMs: 6000, pauseMs: 1200 });
  const view = applicationView([short, long], window);
  assertEquals(view.before.tps, 40);
  assertEquals(view.longestStallMs, 1200);
  assert(view.cameBack);
});

Deno.test("applicationView() says a guest that stopped reporting did not come back", () => {
  const window = { recordStartMs: 0, startMs: 5000, endMs: 8000, recordEndMs: 15_000 };
  const alive = pausedGuest({ tps: 10, fromMs: 0, toMs: 15_000, pauseAtMs: 6000, pauseMs: 300 });
  const lost = pausedGuest({ tps: 10, fromMs: 0, toMs: 6000, pauseAtMs: 99_000, pauseMs: 0 });
  const view = applicationView([alive, lost], window);
  assert(!view.cameBack);
  // Its stall runs from its last report (6 s) to the end of the recording.
  assertEquals(view.longestStallMs, 9000);
  assertEquals(view.after.tps, 10);
});

Deno.test("applicationView() places pgbench's p99 seconds by the progress line after them", () => {
  const lines: ArrivedLine[] = [
    { atMs: 1000, text: progress(CLOCK + 1, 100) },
    { atMs: 1500, text: `gangway-latency sec=${CLOCK} n=100 p99_ms=10.000` },
    { atMs: 2000, text: progress(CLOCK + 2, 100) },
    // Reported late (pgbench's log is buffered) but counted where its second ended.
    { atMs: 4500, text: `gangway-latency sec=${CLOCK + 1} n=100 p99_ms=30.000` },
    { atMs: 5000, text: progress(CLOCK + 3, 100) },
    { atMs: 5100, text: `gangway-latency sec=${CLOCK + 2} n=100 p99_ms=50.000` },
    { atMs: 6000, text: progress(CLOCK + 4, 100) },
  ];
  const view = applicationView([lines], {
    recordStartMs: 0,
    startMs: 2500,
    endMs: 5500,
    recordEndMs: 6000,
  });
  // Second CLOCK ended at the line of 1000 ms and CLOCK + 1 at 2000 ms: both before.
  assertEquals(view.before.p99Ms, 20);
  assertEquals(view.before.worstP99Ms, 30);
  assertEquals(view.during.p99Ms, 50);
  assertEquals(view.after.p99Ms, null);
  // The paused 2 s between the reports of 2000 and 5000 ms.
  assertEquals(view.longestStallMs, 2000);
});

Deno.test("applicationView() spreads wrk's runs over their own seconds", () => {
  // Runs of 1 s every 1.5 s (wrk starts again in between): 0.5 s of every 1.5 s do nothing.
  const lines: ArrivedLine[] = [1500, 3000, 4500, 6000].map((atMs, i) => ({
    atMs,
    text: `gangway-web requests=300 seconds=1.000 p50_ms=5 p99_ms=${20 + i}.00 errors=0 ` +
      `clock=${CLOCK + atMs / 1000}`,
  }));
  const view = applicationView([lines], {
    recordStartMs: 0,
    startMs: 3000,
    endMs: 3000,
    recordEndMs: 6000,
  });
  assertEquals(view.before.tps, 200); // 600 requests in 3 s
  assertEquals(view.after.tps, 200);
  assertEquals(view.before.p99Ms, 20);
  assertEquals(view.after.p99Ms, 22); // the median of the runs ending at 3, 4.5 and 6 s
  // wrk starting again between runs: half a second without requests, before and after.
  assertEquals(view.longestStallMs, 500);
  assertEquals(view.longestStallBeforeMs, 500);
  // The first run went from 0.5 to 1.5 s: half of it in the first second.
  assertEquals(view.series.find((p) => p.t === -3)?.tps, 150);
});

Deno.test("applicationView() counts a guest that runs but completes nothing as stalled", () => {
  // Its clock runs (no pause) but its reports say 0 tps from 4 s to 8 s.
  const lines = Array.from({ length: 12 }, (_, i) => ({
    atMs: (i + 1) * 1000,
    text: progress(CLOCK + i + 1, i >= 3 && i < 7 ? 0 : 100),
  }));
  const view = applicationView([lines], {
    recordStartMs: 0,
    startMs: 2500,
    endMs: 9000,
    recordEndMs: 12_000,
  });
  assertEquals(view.longestStallMs, 4000);
  assertEquals(view.longestStallBeforeMs, 0);
  assertEquals(view.during.tps, 38.5); // 2.5 s at 100 tps in 6.5 s
});

Deno.test("applicationView() of no lines reports nothing done and no stall", () => {
  const view = applicationView([[]], { recordStartMs: 0, startMs: 1, endMs: 2, recordEndMs: 3 });
  assertEquals(view.during.tps, 0);
  assertEquals(view.longestStallMs, null);
  assert(!view.cameBack);
});

Deno.test("SerialRecorder stamps lines as they arrive, across a guest's two logs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-recorder-test-" });
  try {
    const source = `${dir}/source.log`;
    const destination = `${dir}/destination.log`;
    await Deno.writeTextFile(source, progress(CLOCK, 1) + "\n"); // before the recording: skipped
    const recorder = SerialRecorder.start(10);
    recorder.follow("vm1", source, { fromEnd: true });
    recorder.follow("vm1", destination); // not there yet
    // Only the recorder knows when it read a line: wait until it has read each.
    const waitFor = async (count: number) => {
      const deadline = performance.now() + 10_000;
      while (recorder.linesSoFar("vm1").length < count) {
        assert(performance.now() < deadline, `no ${count} lines recorded in 10 s`);
        await delay(10);
      }
    };
    const before = performance.timeOrigin + performance.now();
    await Deno.writeTextFile(
      source,
      progress(CLOCK + 1, 2) + "\ngangway-heartbeat 3 checksum-ok 1\n",
      {
        append: true,
      },
    );
    await waitFor(1);
    // A line torn by the migration: its head in the source's log, its tail in the destination's.
    await Deno.writeTextFile(source, "gangway-pgbench progr", { append: true });
    await Deno.writeTextFile(
      destination,
      `ess: ${CLOCK + 2}.000 s, 3.0 tps\n${progress(CLOCK + 3, 4)}\n`,
    );
    await waitFor(2);
    const lines = (await recorder.stop()).get("vm1")!;
    assertEquals(lines.map((l) => parseWorkloadLine(l.text)?.kind === "work" && l.text), [
      progress(CLOCK + 1, 2),
      progress(CLOCK + 3, 4),
    ]);
    assert(lines[0]!.atMs >= before, "stamped when read, not when the recording started");
    assert(lines[1]!.atMs >= lines[0]!.atMs);
    assert(recorder.stoppedMs! >= lines[1]!.atMs);
    assertEquals(recorder.paths("vm1"), [source, destination]);
    await recorder.stop(); // twice is fine
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SerialRecorder reads a log followed by two paths once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-recorder-test-" });
  try {
    // As host B's log, reached through the agent's root and then through the destination's.
    const log = `${dir}/destination.log`;
    await Deno.writeTextFile(log, progress(CLOCK, 1) + "\n");
    await Deno.symlink(log, `${dir}/other-path.log`);
    const recorder = SerialRecorder.start(10);
    recorder.follow("vm1", log);
    const deadline = performance.now() + 10_000;
    while (recorder.linesSoFar("vm1").length < 1) {
      assert(performance.now() < deadline, "no line recorded in 10 s");
      await delay(10);
    }
    recorder.follow("vm1", `${dir}/other-path.log`);
    await Deno.writeTextFile(log, progress(CLOCK + 1, 2) + "\n", { append: true });
    while (recorder.linesSoFar("vm1").length < 2) {
      assert(performance.now() < deadline, "no second line recorded in 10 s");
      await delay(10);
    }
    const lines = (await recorder.stop()).get("vm1")!;
    assertEquals(lines.map((l) => l.text), [progress(CLOCK, 1), progress(CLOCK + 1, 2)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function withApplication(method: MethodResult["method"], tps: number): MethodResult {
  const lines = pausedGuest({ tps, fromMs: 0, toMs: 20_000, pauseAtMs: 11_000, pauseMs: 500 });
  return {
    method,
    bytesOnWire: 1e8,
    bytesBack: 1000,
    toolBytes: 1e8,
    tmtSeconds: 3,
    downtimeMs: [500],
    resumed: 1,
    checks: [{ name: "vm1", resumed: true, detail: "ok" }],
    bootSeconds: 40,
    ram: "file",
    qemuVersion: "7.2.22",
    accelerator: "tcg",
    oomKills: 0,
    loadAverage: 1,
    warmedMemory: { bytes: 2 ** 30, seconds: 0.5 },
    application: applicationView([lines], {
      recordStartMs: 0,
      startMs: 10_000,
      endMs: 13_000,
      recordEndMs: 20_000,
    }),
  };
}

Deno.test("the JSON, the summary line and the figure carry each method's application view", async () => {
  const result: LabResult = {
    config: { ...DEFAULT_LAB_CONFIG, guests: 1, workload: "pgbench", compare: ["qemu-zstd"] },
    link: "1gbit",
    network: { mode: "netns", description: "two namespaces", reason: "" },
    image: { kernel: "vmlinuz", initramfs: "initrd" },
    memory: { estimatedPeakBytes: 1, peakMethod: "gangway", availableBytes: 2 },
    methods: [withApplication("gangway", 100), withApplication("qemu-zstd", 80)],
    startedAt: "2026-12-01T00:00:00.000Z",
    seconds: 100,
  };
  const json = labJson(result, "deno task lab");
  assertEquals(Object.keys(json.application ?? {}), ["gangway", "qemuZstd"]);
  assertEquals(json.application!.gangway!.before.tps, 100);
  assertEquals(json.application!.qemuZstd!.longestStallMs, 500);
  const line = formatApplication(json.application!.gangway!);
  assert(line.startsWith("before 100.0 tps, during "), line);
  assert(line.endsWith("longest stall 500 ms (before it: 0 ms); came back"), line);
  const svg = await applicationChart(result);
  assert(svg !== undefined && svg.startsWith("<svg"), "an SVG document");
  assert(svg.includes("gangway") && svg.includes("qemu-zstd"), "one line per method");
  assertEquals(await applicationChart({ ...result, methods: [] }), undefined);
  const dir = await Deno.makeTempDir({ prefix: "gangway-app-files-test-" });
  try {
    const written = await writeSweepFiles(dir, [{ axis: "guests", points: [result] }], "lab");
    assert(written.includes(`${dir}/application.svg`), written.join(", "));
    const summary = await Deno.readTextFile(`${dir}/summary.md`);
    assert(summary.includes("![Throughput around the migration](application.svg)"), summary);
    assert(summary.includes(`- qemu-zstd: ${formatApplication(json.application!.qemuZstd!)}`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
