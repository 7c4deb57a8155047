/**
 * The lab's command line, JSON report, summary, goals and sweep files,
 * from made-up measurements (no guests are started here).
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { parseLabArgs, reproduceCommand } from "../src/cli/lab.ts";
import { callerPath, UsageError } from "../src/cli/_cli.ts";
import { DEFAULT_LAB_CONFIG, type LabResult } from "../src/lab/experiment.ts";
import type { LabMethod, MethodResult } from "../src/lab/measurement.ts";
import { goalVerdicts, labJson, methodKey, ratioBase } from "../src/lab/report.ts";
import {
  formatBreakdown,
  formatRatios,
  formatRoundTimes,
  formatSummary,
  formatThrottle,
  table,
} from "../src/lab/summary.ts";
import { sweepSummary, writeSweepFiles } from "../src/lab/sweep.ts";

function measured(
  method: LabMethod,
  bytes: number,
  tmt: number,
  downtimes: number[],
): MethodResult {
  return {
    method,
    bytesOnWire: bytes,
    bytesBack: 1000,
    toolBytes: bytes - 1000,
    tmtSeconds: tmt,
    downtimeMs: downtimes,
    resumed: downtimes.length,
    checks: downtimes.map((_, i) => ({ name: `vm${i}`, resumed: true, detail: "ok" })),
    bootSeconds: 10,
    ram: method === "gangway" ? "file" : "anonymous",
    qemuVersion: "7.2.22",
    accelerator: "tcg",
    oomKills: 0,
    loadAverage: method === "qemu" ? 99 : 0.5,
    warmedMemory: { bytes: 2 ** 30, seconds: method === "qemu" ? 3 : 0.25 },
    ...(method === "gangway"
      ? {
        gangway: {
          transport: "tls",
          compression: { mode: "auto", frames: 10, rawBytes: 100e6, compressedBytes: 60e6 },
          rounds: 3,
          verified: true,
          breakdown: {
            setupSeconds: 0.2,
            handshakeSeconds: 0.1,
            rounds: [
              { round: 1, final: false, seconds: 2, bytesOnWire: bytes - 2e6 },
              { round: 2, final: false, seconds: 0.2, bytesOnWire: 1.5e6 },
              {
                round: 3,
                final: true,
                seconds: 0.1,
                bytesOnWire: 0.5e6,
                time: {
                  scanSeconds: 0.05,
                  planSeconds: 0.01,
                  compressSeconds: 0,
                  linkWaitSeconds: 0.01,
                  receiverWaitSeconds: 0.02,
                  compression: {
                    linkBytesPerSecond: 117e6,
                    cpuBytesPerSecond: 400e6,
                    zstdBytesPerSecond: 350e6,
                    ratio: 0.3,
                    share: 1,
                  },
                },
              },
            ],
            pausedSeconds: 0.12,
            pausingSeconds: 0.005,
            verifySeconds: 0.01,
            switchOverSeconds: 0.03,
            downtimeParts: [
              {
                beforeSwitchOverMs: 60.4,
                setupMs: 2.2,
                deviceStateMs: 11,
                verifyWaitMs: 0,
                runMs: 9.6,
              },
              undefined, // a guest that did not switch over has no parts
            ],
          },
        },
      }
      : {}),
  };
}

function result(guests: number, methods: MethodResult[], memoryMiB = 256): LabResult {
  return {
    config: {
      guests,
      memoryMiB,
      idleSeconds: 10,
      workload: "idle",
      kernelArgs: [],
      compare: methods.filter((m) => m.method !== "gangway").map((m) => m.method) as never,
    },
    link: "1gbit",
    network: { mode: "netns", description: "two namespaces", reason: "root" },
    image: { kernel: "vmlinuz-6.1.0-56-amd64", initramfs: "initramfs-x.cpio" },
    memory: { estimatedPeakBytes: 2e9, peakMethod: "gangway", availableBytes: 20e9 },
    methods,
    startedAt: "2026-11-25T00:00:00.000Z",
    seconds: 60,
  };
}

const FOUR = result(4, [
  measured("gangway", 232e6, 2.5, [150, 158, 152, 155]),
  measured("qemu", 373e6, 3.2, [127, 434, 200, 240]),
  measured("qemu-zstd", 150e6, 5, [300, 310, 320, 330]),
]);

Deno.test("parseLabArgs() gives the defaults of the main job", () => {
  const command = parseLabArgs([]);
  assertEquals(command.config, DEFAULT_LAB_CONFIG);
  assertEquals([command.link, command.network, command.json, command.out], [
    "1gbit",
    "auto",
    undefined,
    undefined,
  ]);
  assertEquals([command.sweepGuests, command.sweepMemory], [undefined, undefined]);
});

Deno.test("DEFAULT_LAB_CONFIG holds the defaults docs/lab.md documents", () => {
  assertEquals(DEFAULT_LAB_CONFIG, {
    guests: 4,
    memoryMiB: 256,
    idleSeconds: 10,
    workload: "idle",
    images: ["busybox"],
    kernelArgs: [],
    compare: ["qemu", "qemu-zstd"],
    insecure: false,
    gangwayCompression: "auto",
    gangwayFinalRounds: "per-guest",
    baselineRam: "anonymous",
    storage: "shared",
    accelerator: "tcg",
  });
});

Deno.test("parseLabArgs() reads every flag, after the -- of deno task", () => {
  const command = parseLabArgs([
    "--",
    ...["--guests", "8", "--memory", "1G", "--link", "100mbit", "--idle", "0.5"],
    ...[
      "--workload",
      "busy",
      "--compare",
      "qemu,qemu-zstd,qemu",
      "--kernel-args",
      " nokaslr  quiet ",
    ],
    ...["--sweep-guests", "1,2, 4", "--sweep-memory", "256M,1G", "--out", "o", "--json", "j"],
    ...["--network", "loopback", "--insecure", "--gangway-compression", "none"],
    ...["--gangway-final-rounds", "per-guest"],
    ...["--baseline-ram", "file", "--qemu-binary", "/opt/qemu-9.2/bin/qemu-system-x86_64"],
    ...["--accel", "kvm", "--storage", "copy", "--max-throttle", "60", "--throttle-step", "25"],
  ]);
  assertEquals(command.config, {
    guests: 8,
    memoryMiB: 1024,
    idleSeconds: 0.5,
    workload: "busy",
    images: ["busybox"],
    kernelArgs: ["nokaslr", "quiet"],
    compare: ["qemu", "qemu-zstd"],
    insecure: true,
    gangwayCompression: "none",
    gangwayFinalRounds: "per-guest",
    baselineRam: "file",
    storage: "copy",
    accelerator: "kvm",
    qemuBinary: "/opt/qemu-9.2/bin/qemu-system-x86_64",
    throttle: { max: 0.6, step: 0.25 },
  });
  assertEquals(command.sweepGuests, [1, 2, 4]);
  assertEquals(command.sweepMemory, [256, 1024]);
  // Paths as the user meant them: from where `deno task` ran, when it says (INIT_CWD).
  assertEquals([command.link, command.network, command.out, command.json], [
    "100mbit",
    "loopback",
    callerPath("o"),
    callerPath("j"),
  ]);
});

Deno.test("parseLabArgs() refuses what it cannot run, as usage errors", () => {
  const refuse = (args: string[], message: string) =>
    assertThrows(() => parseLabArgs(args), UsageError, message);
  refuse(["--memory", "1000K"], "whole MiB");
  refuse(["--workload", "heavy"], "--workload must be idle, busy, pgbench, web");
  for (const bad of ["0", "100", "50.5", "x"]) {
    refuse(["--max-throttle", bad], "--max-throttle must be a whole percent from 1 to 99");
  }
  refuse(
    ["--throttle-initial", "50"],
    "--throttle-initial and --throttle-step need --max-throttle",
  );
  refuse(
    ["--max-throttle", "90", "--throttle-step", "0"],
    "--throttle-step must be a whole percent",
  );
  refuse(["--compare", "xen"], "--compare takes qemu and qemu-zstd");
  refuse(["--link", "fast"], 'Cannot parse link rate "fast"');
  refuse(["--guests", "0"], "--guests needs a positive integer");
  refuse(["--idle=-1"], "--idle needs seconds");
  for (const idle of ["0x10", "1e3", " 5", "Infinity"]) {
    refuse(["--idle", idle], "--idle needs seconds");
  }
  refuse(["--memory", "99999999999999999999G"], "--memory is too large");
  refuse(["--idle", "2200000"], "--idle takes at most 2147483 seconds (24.8 days)");
  refuse(["--sweep-guests", ","], "comma-separated list");
  refuse(["--network", "wifi"], "--network must be auto, netns or loopback");
  refuse(["extra"], 'unexpected argument "extra"');
  refuse(["--gangway-compression", "lz4"], "--gangway-compression must be auto, zstd or none");
  refuse(["--baseline-ram", "shm"], "--baseline-ram must be anonymous or file");
  refuse(["--accel", "hvf"], "--accel must be tcg or kvm");
  refuse(["--storage", "nfs"], "--storage must be shared or copy");
  refuse(["--qemu-binary", "/opt/q/bin/qemu"], "a path to a qemu-system-* program");
  refuse(["--qemu-binary", "qemu-system-x86_64 -S"], "a path to a qemu-system-* program");
});

Deno.test("reproduceCommand() quotes what a shell would split", () => {
  assertEquals(reproduceCommand([]), "deno task lab");
  assertEquals(
    reproduceCommand([
      "--",
      "--guests",
      "8",
      "--kernel-args",
      "nokaslr quiet",
      "--json",
      "it's.json",
    ]),
    "deno task lab -- --guests 8 --kernel-args 'nokaslr quiet' --json 'it'\\''s.json'",
  );
});

Deno.test("labJson() has the fields of issue 5 first, in order, with ratios to QEMU's default", () => {
  const json = labJson(FOUR, "deno task lab");
  assertEquals(Object.keys(json).slice(0, 9), [
    "guests",
    "memoryBytes",
    "link",
    "workload",
    "gangway",
    "qemu",
    "qemuZstd",
    "trafficRatio",
    "tmtRatio",
  ]);
  assertEquals(Object.keys(json.gangway).slice(0, 6), [
    "bytesOnWire",
    "tmtSeconds",
    "downtimeMs",
    "rounds",
    "verified",
    "resumed",
  ]);
  assertEquals(Object.keys(json.qemu!).slice(0, 4), [
    "bytesOnWire",
    "tmtSeconds",
    "downtimeMs",
    "resumed",
  ]);
  assertEquals([json.guests, json.memoryBytes, json.link, json.workload], [
    4,
    268435456,
    "1gbit",
    "idle",
  ]);
  assertEquals([json.trafficRatio, json.tmtRatio, json.ratioBase], [0.622, 0.781, "qemu"]);
  assertEquals(json.ratios.qemuZstd, { traffic: 1.547, tmt: 0.5 });
  assertEquals(json.gangway.rounds, 3);
  assertEquals(json.qemu!.rounds, undefined);
  assertEquals(json.command, "deno task lab");
  assertEquals(methodKey("qemu-zstd"), "qemuZstd");
});

Deno.test("goalVerdicts() judges traffic, TMT and worst downtime against the best QEMU method, from 4 guests on", () => {
  // qemu has the shorter TMT of the two QEMU methods here: it is the peer.
  assertEquals(goalVerdicts(FOUR).map((g) => [g.goal, g.measured, g.met]), [
    ["bytes on the link <= 0.5x qemu", "0.62x", false],
    ["TMT <= 0.6x qemu", "0.78x", false],
    ["worst downtime <= 100 ms", "158 ms", false],
    ["worst downtime <= qemu's worst", "158 ms vs 434 ms", true],
  ]);
  const good = result(8, [
    measured("gangway", 100e6, 1, [600]),
    measured("qemu", 400e6, 4, [499]),
  ]);
  assertEquals(goalVerdicts(good).map((g) => g.met), [true, true, false, false]);
  assertEquals(goalVerdicts(result(2, FOUR.methods)), []);
  const close = result(4, [
    measured("gangway", 100e6, 0.601, [1]),
    measured("qemu", 400e6, 1, [1]),
  ]);
  assertEquals(goalVerdicts(close)[1]!.measured, "0.601x", "a miss is not shown as 0.60x");
  // qemu-zstd is faster here, so it is the one gangway is judged against.
  const zstdFaster = result(4, [
    measured("gangway", 100e6, 1, [50]),
    measured("qemu", 400e6, 4, [60]),
    measured("qemu-zstd", 220e6, 2, [90]),
  ]);
  assertEquals(goalVerdicts(zstdFaster).map((g) => [g.goal, g.met]), [
    ["bytes on the link <= 0.5x qemu-zstd", true],
    ["TMT <= 0.6x qemu-zstd", true],
    ["worst downtime <= 100 ms", true],
    ["worst downtime <= qemu-zstd's worst", true],
  ]);
  // On a link faster than 1 Gbit/s the TMT goal is 0.8x.
  assertEquals(goalVerdicts({ ...zstdFaster, link: "10gbit" })[1]!.goal, "TMT <= 0.8x qemu-zstd");
  assertEquals(goalVerdicts({ ...zstdFaster, link: "none" })[1]!.goal, "TMT <= 0.8x qemu-zstd");
});

Deno.test("goalVerdicts() judges guests that keep writing by their rounds converging and TMT <= 0.8x, not by bytes", () => {
  const busy = (ended: "converged" | "stalled" | undefined, tmt: number): LabResult => {
    const gangway = measured("gangway", 300e6, tmt, [90]);
    gangway.gangway = { ...gangway.gangway!, ...(ended && { liveRoundsEnded: ended }) };
    const four = result(4, [gangway, measured("qemu-zstd", 280e6, 4, [400])]);
    return { ...four, config: { ...four.config, workload: "busy" } };
  };
  assertEquals(goalVerdicts(busy("converged", 3)).map((g) => [g.goal, g.measured, g.met]), [
    ["the live rounds converge", "they ended: converged", true],
    ["TMT <= 0.8x qemu-zstd", "0.75x", true],
    ["worst downtime <= 100 ms", "90 ms", true],
    ["worst downtime <= qemu-zstd's worst", "90 ms vs 400 ms", true],
  ]);
  assertEquals(goalVerdicts(busy("stalled", 3.3)).slice(0, 2).map((g) => [g.measured, g.met]), [
    ["they ended: stalled", false],
    ["0.82x", false],
  ]);
  assertEquals(goalVerdicts(busy(undefined, 3))[0]!.met, false, "an older report says nothing");
  assertEquals(labJson(busy("converged", 3), "deno task lab").gangway.liveRoundsEnded, "converged");
});

Deno.test("gangway alone (--compare none) has no ratios and no goals", () => {
  const alone = result(24, [measured("gangway", 700e6, 18, [800])]);
  assertEquals(goalVerdicts(alone), []);
  const json = labJson(alone, "deno task lab -- --compare none");
  assertEquals([json.trafficRatio, json.tmtRatio, json.ratioBase, json.ratios], [
    null,
    null,
    null,
    {},
  ]);
  assert(formatSummary(alone).includes("none was compared (--compare none)"));
});

Deno.test("a compared method that did not complete is reported, and judged by what did", () => {
  const error = 'migration of "z1" still active after 300000 ms';
  const onlyGangway = {
    ...result(4, [measured("gangway", 268e6, 23, [900])]),
    failed: [{ method: "qemu-zstd" as const, error }],
  };
  const text = formatSummary(onlyGangway);
  assert(text.includes(`qemu-zstd did not complete: ${error}`), text);
  assert(text.includes("none that was compared completed"), text);
  const json = labJson(onlyGangway, "deno task lab -- --compare qemu-zstd");
  assertEquals(json.failed, { qemuZstd: error });
  assertEquals(json.tmtRatio, null);
  const withQemu = { ...FOUR, failed: [{ method: "qemu-zstd" as const, error }] };
  assertEquals(labJson(withQemu, "deno task lab").ratioBase, ratioBase(FOUR)?.method);
  assert(formatSummary(withQemu).includes("kernel OOM killer: killed nothing during the run"));
  // The OOM killer's kills during a method that failed count as the run's, as its error says.
  const killedDuring = {
    ...FOUR,
    failed: [{ method: "qemu-zstd" as const, error: `${error} (meanwhile ...)`, oomKills: 4 }],
  };
  assert(
    formatSummary(killedDuring).includes(
      "kernel OOM killer: killed 4 processes during qemu-zstd (which did not complete) " +
        "(dmesg says which)",
    ),
    formatSummary(killedDuring),
  );
});

Deno.test("formatSummary() shows a row per method, the ratios, gangway's time and the goals", () => {
  const text = formatSummary(FOUR);
  assert(
    /gangway\s+shared file\s+232\.0 MB\s+232\.0 MB\s+2\.50 s\s+154 \/ 158 ms\s+4\/4\s+-\s+3, verified/
      .test(text),
    text,
  );
  assert(/qemu\s+anonymous\s+373\.0 MB/.test(text), text);
  // The guests' RAM in huge pages at the source, where they were.
  const huge = formatSummary({
    ...FOUR,
    methods: FOUR.methods.map((m) => ({ ...m, hugePages: m.method !== "qemu-zstd" })),
  });
  assert(/gangway\s+shared file, huge pages\s+232\.0 MB/.test(huge), huge);
  assert(/qemu\s+anonymous, huge pages\s+373\.0 MB/.test(huge), huge);
  assert(/qemu-zstd\s+anonymous\s+150\.0 MB/.test(huge), huge);
  assert(text.includes("QEMU 7.2.22 under tcg"), text);
  assert(text.includes("gangway / qemu: traffic 0.62x, TMT 0.78x"), text);
  assert(text.includes("gangway / qemu-zstd: traffic 1.55x, TMT 0.50x"), text);
  assert(text.includes("live rounds 2.00 + 0.20 s"), text);
  assert(
    text.includes("paused 0.12 s (pausing 0.01 s + final round 0.10 s + verify 0.01 s)"),
    text,
  );
  assert(
    text.includes(
      "gangway's rounds: final 0.10 s = scan 0.05 + plan 0.01 + zstd wait 0.00 + link wait 0.01 + " +
        "answer wait 0.02 + other 0.01 (link 117 MB/s, page data per busy second 400 MB/s, zstd 350 MB/s to 0.30: " +
        "compressing 100%)",
    ),
    text,
  );
  assert(
    text.includes(
      "gangway's downtime per guest: 1: final round 60 + setup 2 + device state 11 + " +
        "verify wait 0 + cont 10 ms\n",
    ),
    text,
  );
  assert(text.includes("missed bytes on the link <= 0.5x qemu: 0.62x"), text);
  assert(text.includes("kernel defaults (KASLR on)"), text);
  assert(
    text.includes("gangway over TLS with compression auto, ending per-guest, QEMU over plain TCP"),
    text,
  );
  assert(
    text.includes(
      "gangway's compression: auto, 10 frames: 100.0 MB of page data sent as 60.0 MB (0.60)",
    ),
    text,
  );
  assert(text.includes("CPUs: gangway 0.50, qemu 99.00, qemu-zstd 0.50"), text);
});

Deno.test("formatRatios() gives the summary's ratio line, to two decimals", () => {
  const [gangway, qemu] = FOUR.methods;
  assertEquals(formatRatios(gangway!, qemu!), "gangway / qemu: traffic 0.62x, TMT 0.78x");
  assert(formatSummary(FOUR).split("\n").includes(formatRatios(gangway!, qemu!)));
});

Deno.test("table() pads the first column left and the others right", () => {
  assertEquals(table([["a", "bb"], ["ccc", "d"]]), "a    bb\nccc   d");
});

Deno.test("writeSweepFiles() writes the JSON, the figures and a summary that links them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-lab-sweep-" });
  try {
    const guests = {
      axis: "guests" as const,
      points: [1, 4].map((n) =>
        result(n, [
          measured("gangway", n * 60e6, n * 0.6, Array(n).fill(80)),
          measured("qemu", n * 90e6, n, Array(n).fill(100)),
        ])
      ),
    };
    const memory = {
      axis: "memory" as const,
      points: [256, 1024].map((mib) =>
        result(1, [
          measured("gangway", mib * 0.2e6, 1, [80]),
          measured("qemu", mib * 0.3e6, 2, [90]),
        ], mib)
      ),
    };
    const written = await writeSweepFiles(
      dir,
      [guests, memory],
      "deno task lab -- --sweep-guests 1,4",
    );
    const names = written.map((path) => path.slice(dir.length + 1)).sort();
    assertEquals(names, [
      "downtime-vs-guests.svg",
      "fig2-tmt-vs-guests.svg",
      "fig3-traffic-vs-guests.svg",
      "fig4-tmt-vs-memory.svg",
      "guests.json",
      "memory.json",
      "summary.md",
      "traffic-vs-memory.svg",
    ]);
    const svg = await Deno.readTextFile(`${dir}/fig2-tmt-vs-guests.svg`);
    assert(
      svg.startsWith("<svg") && svg.includes("gangway") && svg.includes("qemu"),
      svg.slice(0, 200),
    );
    const document = JSON.parse(await Deno.readTextFile(`${dir}/guests.json`));
    assertEquals(document.points.map((p: { guests: number }) => p.guests), [1, 4]);
    const summary = await Deno.readTextFile(`${dir}/summary.md`);
    assertEquals(summary, sweepSummary([guests, memory], "deno task lab -- --sweep-guests 1,4"));
    for (const file of names.filter((name) => name.endsWith(".svg"))) {
      assert(summary.includes(`](${file})`), `summary.md does not link ${file}`);
    }
    assert(
      summary.includes(
        "| 4 | 240.0 | 2.40 | 80 | 360.0 | 4.00 | 100 | 0.67 | 0.60 | qemu | 4/4, 4/4 |",
      ),
      summary,
    );
    assert(summary.includes("Goals at 4 guests"), summary);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatBreakdown() tells the guests' own final rounds and catch-ups from live rounds", () => {
  const time = {
    scanSeconds: 0.04,
    planSeconds: 0,
    compressSeconds: 0,
    linkWaitSeconds: 0,
    receiverWaitSeconds: 0.01,
  };
  const breakdown = {
    setupSeconds: 0.5,
    handshakeSeconds: 0.1,
    rounds: [
      { round: 1, final: false, seconds: 2, bytesOnWire: 100e6 },
      { round: 2, final: false, seconds: 0.08, bytesOnWire: 1e5, guest: 0, time },
      { round: 3, final: false, seconds: 0.03, bytesOnWire: 1e5, caughtUp: 1, time },
      { round: 4, final: false, seconds: 0.07, bytesOnWire: 1e5, guest: 1, time },
      { round: 5, final: true, seconds: 0, bytesOnWire: 13 },
    ],
    pausedSeconds: 0.2,
    switchOverSeconds: 0.4,
  };
  const text = formatBreakdown(breakdown);
  assert(
    text.includes(
      "live rounds 2.00 s, catch-up rounds 0.03 s (guest 2), each guest's final round 0.08 + 0.07 s",
    ),
    text,
  );
  const rounds = formatRoundTimes(breakdown);
  assert(rounds.startsWith("guest 1's final 0.08 s = scan 0.04"), rounds);
  assert(rounds.includes("; guest 2's catch-up 0.03 s = scan 0.04"), rounds);
});

Deno.test("formatThrottle() says which rounds gangway throttled its guests in, or that none did", () => {
  const breakdown = {
    setupSeconds: 0.5,
    handshakeSeconds: 0.1,
    rounds: [
      { round: 1, final: false, seconds: 9, bytesOnWire: 100e6 },
      { round: 2, final: false, seconds: 3, bytesOnWire: 40e6 },
      { round: 3, final: false, seconds: 3, bytesOnWire: 40e6, throttle: 0.2 },
      { round: 4, final: false, seconds: 2, bytesOnWire: 30e6, throttle: 0.3 },
    ],
    pausedSeconds: 0.2,
    switchOverSeconds: 0.4,
  };
  assertEquals(
    formatThrottle({ max: 0.99 }, breakdown),
    "auto-converge (every method: 20%, then 10% more, at most 99% of the guests' time): " +
      "gangway throttled its guests 20% in round 3, 30% in round 4",
  );
  assert(
    formatThrottle({ max: 0.5, initial: 0.5 }, {
      ...breakdown,
      rounds: breakdown.rounds.slice(0, 2),
    })
      .endsWith("gangway's rounds converged unthrottled"),
  );
});
