/**
 * The memory a lab run needs, and the guests a method lost: what the table, the JSON and
 * the exit status make of them. No guests are started here.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import type { QemuGuest } from "../src/qemu/guest.ts";
import { waitForHeartbeat } from "../src/qemu/heartbeat.ts";
import { DEFAULT_LAB_CONFIG, type LabResult, refuseUnlessLabFits } from "../src/lab/experiment.ts";
import {
  estimateMemory,
  gib,
  MEMORY_HEADROOM_BYTES,
  refuseUnlessFits,
} from "../src/lab/memory_budget.ts";
import {
  judgeLostGuests,
  knownQemuIssue,
  lostTotals,
  QEMU_TCG_DIRTY_FIX,
} from "../src/lab/lost_guests.ts";
import type { LabMethod, MethodResult } from "../src/lab/measurement.ts";
import { mountsIn } from "../src/lab/_files.ts";
import { shmemRefusal } from "../src/lab/huge_tmpfs.ts";
import { labJson } from "../src/lab/report.ts";
import { checkResumed } from "../src/lab/resumed.ts";
import { formatSummary } from "../src/lab/summary.ts";
import { sweepSummary } from "../src/lab/sweep.ts";

const GIB = 2 ** 30;

Deno.test("estimateMemory() fits the paper's 24 guests of 512 MiB with anonymous RAM of small pages, not with files or huge pages", () => {
  const plan = {
    guests: 24,
    memoryMiB: 512,
    workload: "idle" as const,
    methods: ["gangway", "qemu", "qemu-zstd"] as LabMethod[],
  };
  const anonymous = estimateMemory({ ...plan, baselineRam: "anonymous" });
  assertEquals(anonymous.methods.map((m) => m.ram), ["file", "anonymous", "anonymous"]);
  assertEquals(anonymous.peak.method, "gangway");
  assert(
    anonymous.peak.bytes > 10 * GIB && anonymous.peak.bytes < 14 * GIB,
    `${anonymous.peak.bytes}`,
  );
  refuseUnlessFits(anonymous, 22 * GIB, "24 guests of 512 MiB");
  const file = estimateMemory({ ...plan, baselineRam: "file" });
  assertEquals(file.peak.method, "qemu");
  // Both ends of every QEMU migration grow to the guest's whole 512 MiB, and more for QEMU.
  assert(file.peak.bytes >= 2 * 24 * 512 * 2 ** 20, `${file.peak.bytes}`);
  assertThrows(
    () => refuseUnlessFits(file, 22 * GIB, "24 guests of 512 MiB"),
    Error,
    "Cannot run the lab with 24 guests of 512 MiB: qemu needs about 28.5 GiB at its peak",
  );
  assertThrows(
    () => refuseUnlessFits(file, 22 * GIB, "24 guests of 512 MiB"),
    Error,
    "drop --baseline-ram file",
  );
  // With transparent huge pages both ends of QEMU's migration grow to about the whole guest:
  // files would not help then, and the hint names every QEMU method that does not fit.
  const huge = estimateMemory({ ...plan, baselineRam: "anonymous", hugePages: true });
  assertThrows(
    () =>
      refuseUnlessFits(
        estimateMemory({ ...plan, baselineRam: "file", hugePages: true }),
        22 * GIB,
        "24 guests of 512 MiB",
      ),
    Error,
    "run fewer or smaller guests, or leave qemu and qemu-zstd out (--compare none)",
  );
  // One QEMU method that fits stays in the hint's --compare.
  assertThrows(
    () =>
      refuseUnlessFits(
        { ...huge, methods: [...huge.methods.slice(0, 2), { ...huge.methods[2]!, bytes: GIB }] },
        22 * GIB,
        "24 guests of 512 MiB",
      ),
    Error,
    "or leave qemu out (--compare qemu-zstd)",
  );
  assertEquals(huge.peak.method, "qemu");
  assertEquals(huge.peak.bytes, file.peak.bytes);
  assertThrows(
    () => refuseUnlessFits(huge, 22 * GIB, "24 guests of 512 MiB"),
    Error,
    "(24 guests of 512 MiB in anonymous RAM of transparent huge pages, about whole on both " +
      "hosts once QEMU's migration runs), 22.0 GiB is available and 1.0 GiB of it is kept free; " +
      "run fewer or smaller guests, or leave qemu and qemu-zstd out (--compare none)",
  );
});

Deno.test("estimateMemory() grows with busy guests and stops at a small guest's whole size", () => {
  const plan = { guests: 4, memoryMiB: 256, methods: ["qemu"] as LabMethod[] };
  const idle = estimateMemory({ ...plan, workload: "idle", baselineRam: "anonymous" }).peak.bytes;
  const busy = estimateMemory({ ...plan, workload: "busy", baselineRam: "anonymous" }).peak.bytes;
  assert(busy > idle, `${busy} <= ${idle}`);
  const tiny = estimateMemory({
    guests: 1,
    memoryMiB: 64,
    workload: "busy",
    methods: ["qemu"],
    baselineRam: "anonymous",
  });
  const whole = estimateMemory({
    guests: 1,
    memoryMiB: 64,
    workload: "busy",
    methods: ["qemu"],
    baselineRam: "file",
  });
  assertEquals(tiny.peak.bytes, whole.peak.bytes, "a guest cannot touch more than its RAM");
});

Deno.test("refuseUnlessLabFits() keeps the headroom free and lets the default run through", () => {
  const host = (availableBytes: number) => ({ availableBytes, hugePages: true });
  const huge = refuseUnlessLabFits(DEFAULT_LAB_CONFIG, host(8 * GIB));
  assert(huge.peak.bytes < 4 * GIB, `${huge.peak.bytes}`);
  assertEquals(huge.hugePageFiles, true);
  // A byte short for RAM files in huge pages: in small ones, which need less.
  const small = refuseUnlessLabFits(
    DEFAULT_LAB_CONFIG,
    host(huge.peak.bytes + MEMORY_HEADROOM_BYTES - 1),
  );
  assertEquals(small.hugePageFiles, false);
  assert(small.peak.bytes < huge.peak.bytes, `${small.peak.bytes}`);
  assertThrows(
    () =>
      refuseUnlessLabFits(DEFAULT_LAB_CONFIG, host(small.peak.bytes + MEMORY_HEADROOM_BYTES - 1)),
    Error,
    "run fewer or smaller guests",
  );
  refuseUnlessLabFits(DEFAULT_LAB_CONFIG, host(small.peak.bytes + MEMORY_HEADROOM_BYTES));
});

Deno.test("refuseUnlessLabFits() puts RAM files on huge pages where QEMU's RAM gets them and the run fits so", () => {
  const host = { availableBytes: 23 * GIB, hugePages: true };
  const huge = refuseUnlessLabFits(DEFAULT_LAB_CONFIG, host);
  assertEquals(huge.hugePageFiles, true);
  const gangway = huge.methods.find((m) => m.method === "gangway")!;
  assert(gangway.how.includes("in files of huge pages at the source"), gangway.how);
  // Whole at the source: more than the guests touch there.
  const plain = estimateMemory({
    guests: DEFAULT_LAB_CONFIG.guests,
    memoryMiB: DEFAULT_LAB_CONFIG.memoryMiB,
    workload: DEFAULT_LAB_CONFIG.workload,
    methods: ["gangway"],
    baselineRam: "anonymous",
  });
  assertEquals(plain.hugePageFiles, false);
  assert(gangway.bytes > plain.peak.bytes, `${gangway.bytes} <= ${plain.peak.bytes}`);
  // Where the kernel gives QEMU's anonymous RAM none, files get none either.
  assertEquals(
    refuseUnlessLabFits(DEFAULT_LAB_CONFIG, { ...host, hugePages: false }).hugePageFiles,
    false,
  );
  // The paper's largest gang alone: 24 guests of 512 MiB whole at the source (20.9 GiB) fit in
  // 23 GiB; in 21 they do not, touched they do (12.1), and the run goes on in small pages.
  const paper = { ...DEFAULT_LAB_CONFIG, guests: 24, memoryMiB: 512, compare: [] };
  const whole = refuseUnlessLabFits(paper, host);
  assertEquals([whole.hugePageFiles, gib(whole.peak.bytes)], [true, "20.9"]);
  const large = refuseUnlessLabFits(paper, { ...host, availableBytes: 21 * GIB });
  assertEquals([large.hugePageFiles, gib(large.peak.bytes)], [false, "12.1"]);
  assert(large.peak.how.includes("touching about"), large.peak.how);
});

Deno.test("mountsIn() finds the mount points in a tree, deepest first, and no sibling's", () => {
  const mounts = [
    "tmpfs /dev/shm tmpfs rw 0 0",
    "gangway-lab-huge /dev/shm/gangway-lab-1-ab/source-huge tmpfs rw,huge=within_size 0 0",
    "tmpfs /dev/shm/gangway-lab-1-ab tmpfs rw 0 0",
    "tmpfs /dev/shm/gangway-lab-1-abc tmpfs rw 0 0",
    "tmpfs /dev/shm/gangway-lab-1-ab/with\\040space tmpfs rw 0 0",
  ].join("\n");
  assertEquals(mountsIn(mounts, "/dev/shm/gangway-lab-1-ab/"), [
    "/dev/shm/gangway-lab-1-ab/source-huge",
    "/dev/shm/gangway-lab-1-ab/with space",
    "/dev/shm/gangway-lab-1-ab",
  ]);
  assertEquals(mountsIn(mounts, "/dev/shm/gangway-lab-2-ab"), []);
  // Under the root every mount is: refused, as a relative path is.
  for (const path of ["/", "//", "", "dev/shm"]) {
    assertThrows(() => mountsIn(mounts, path), RangeError, "not an absolute path below /");
  }
});

Deno.test("shmemRefusal() reads the setting in force of shmem_enabled", () => {
  assertEquals(shmemRefusal("always within_size advise [never] deny force\n"), undefined);
  assertEquals(shmemRefusal("always within_size advise never deny [force]\n"), undefined);
  assertEquals(
    shmemRefusal("always within_size advise never [deny] force\n"),
    '/sys/kernel/mm/transparent_hugepage/shmem_enabled is "deny"',
  );
  assertEquals(shmemRefusal(undefined), "the kernel has no transparent huge pages");
});

const CRASH_LINES = [
  "list_del corruption. prev->next should be ffffd6a3c0219848, but was ffffd6a3c0219808.",
  "kernel BUG at lib/list_debug.c:59!",
  "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
  "RIP: 0010:__list_del_entry_valid.cold+0x4b/0x6f",
];

function measured(
  method: LabMethod,
  lost: number,
  more: Partial<MethodResult> = {},
): MethodResult {
  const guests = 4;
  return {
    method,
    bytesOnWire: 100e6,
    bytesBack: 1e6,
    toolBytes: 99e6,
    tmtSeconds: 2,
    downtimeMs: Array(guests).fill(100),
    resumed: guests - lost,
    checks: Array.from({ length: guests }, (_, i) =>
      i < lost
        ? {
          name: `${method}-${i}`,
          resumed: false,
          detail: `its kernel crashed at the target (corruption): ${CRASH_LINES[0]}`,
          kernelCrash: {
            kind: "corruption" as const,
            lines: CRASH_LINES,
            where: "target" as const,
          },
        }
        : { name: `${method}-${i}`, resumed: true, detail: "ok" }),
    bootSeconds: 10,
    ram: method === "gangway" ? "file" : "anonymous",
    qemuVersion: "7.2.22",
    accelerator: "tcg",
    oomKills: 0,
    loadAverage: 1,
    warmedMemory: { bytes: 2 ** 30, seconds: 0.5 },
    ...(method === "gangway"
      ? {
        gangway: {
          transport: "tls" as const,
          compression: { mode: "auto" as const, frames: 0, rawBytes: 0, compressedBytes: 0 },
          rounds: 2,
          verified: true,
          breakdown: {
            setupSeconds: 0.1,
            handshakeSeconds: 0.1,
            rounds: [{ round: 1, final: true, seconds: 1, bytesOnWire: 100e6 }],
            pausedSeconds: 0.1,
            switchOverSeconds: 0.02,
          },
        },
      }
      : {}),
    ...more,
  };
}

function run(methods: MethodResult[]): LabResult {
  return {
    config: { ...DEFAULT_LAB_CONFIG, compare: ["qemu", "qemu-zstd"] },
    link: "1gbit",
    network: { mode: "netns", description: "two namespaces", reason: "root" },
    image: { kernel: "vmlinuz-6.1.0-57-amd64", initramfs: "initramfs-x.cpio" },
    memory: { estimatedPeakBytes: 2 * GIB, peakMethod: "gangway", availableBytes: 20 * GIB },
    methods,
    startedAt: "2026-12-01T00:00:00.000Z",
    seconds: 90,
  };
}

const BASELINE_LOST = run([
  measured("gangway", 0),
  measured("qemu", 0),
  measured("qemu-zstd", 2, { oomKills: 0 }),
]);

Deno.test("labJson() lists each method's lost guests with the reason and QEMU's known bug", () => {
  const json = labJson(BASELINE_LOST, "deno task lab");
  assertEquals(json.gangway.lost, []);
  assertEquals(json.gangway.knownIssue, undefined);
  assertEquals(json.qemu!.lost, []);
  assertEquals(json.qemuZstd!.lost.length, 2);
  assertEquals(json.qemuZstd!.lost[0], {
    name: "qemu-zstd-0",
    reason: `its kernel crashed at the target (corruption): ${CRASH_LINES[0]}`,
    kernelCrash: CRASH_LINES,
  });
  assert(json.qemuZstd!.knownIssue?.includes(QEMU_TCG_DIRTY_FIX.commit), json.qemuZstd!.knownIssue);
  assert(json.qemuZstd!.knownIssue?.includes("QEMU 7.2.22 under TCG"), json.qemuZstd!.knownIssue);
  // Its migration completed: its figures still count.
  assertEquals(json.ratios.qemuZstd, { traffic: 1, tmt: 1 });
  assertEquals(
    [json.qemu!.ramBackend, json.gangway.ramBackend, json.qemu!.qemuVersion, json.qemu!.oomKills],
    ["anonymous", "file", "7.2.22", 0],
  );
});

Deno.test("knownQemuIssue() points at QEMU's bug only under TCG before QEMU 9.0", () => {
  const lost = (more: Partial<MethodResult>) => knownQemuIssue(measured("qemu", 1, more));
  assert(lost({})?.includes("03bfc2188f"));
  assert(lost({ qemuVersion: "8.2.2" })?.includes("QEMU 8.2.2"));
  assertEquals(lost({ qemuVersion: "9.0.0" }), undefined);
  assertEquals(lost({ accelerator: "kvm" }), undefined);
  assertEquals(knownQemuIssue(measured("qemu", 0)), undefined);
  assertEquals(knownQemuIssue(measured("gangway", 1)), undefined);
});

Deno.test("formatSummary() shows the lost guests in the table, with the crash and the known bug", () => {
  const text = formatSummary(BASELINE_LOST);
  assert(/qemu-zstd\s+anonymous\s+100\.0 MB.*2\/4\s+2 \(2 kernel crash\)/.test(text), text);
  assert(/gangway\s+shared file\s+100\.0 MB.*4\/4\s+-\s+2, verified/.test(text), text);
  assert(text.includes("qemu-zstd lost 2 of 4 guests:"), text);
  assert(text.includes(`  qemu-zstd-0: its kernel crashed at the target`), text);
  assert(text.includes(`    ${CRASH_LINES[2]}`), text);
  assert(text.includes("likely QEMU's own bug"), text);
  assert(text.includes("kernel OOM killer: killed nothing during the run"), text);
  const killed = formatSummary(run([measured("gangway", 0), measured("qemu", 0, { oomKills: 3 })]));
  assert(killed.includes("killed 3 processes during qemu"), killed);
});

Deno.test("judgeLostGuests() fails the run for gangway's losses only; a baseline's is a warning", () => {
  const baseline = judgeLostGuests([BASELINE_LOST]);
  assertEquals(baseline.failures, []);
  assertEquals(baseline.warnings.length, 1);
  assert(baseline.warnings[0]!.startsWith("qemu-zstd lost 2 of 4 guests (4 guests of 256 MiB)"));
  const gangwayLost = judgeLostGuests([run([measured("gangway", 1), measured("qemu", 0)])]);
  assertEquals(gangwayLost.failures, ["gangway lost 1 guests (4 guests of 256 MiB)"]);
  const unverified = measured("gangway", 0);
  unverified.gangway!.verified = false;
  assertEquals(judgeLostGuests([run([unverified, measured("qemu", 0)])]).failures, [
    "gangway's RAM was not verified (4 guests of 256 MiB)",
  ]);
});

Deno.test("lostTotals() and the sweep summary count guests migrated and lost per method", () => {
  const second = run([measured("gangway", 0), measured("qemu", 1), measured("qemu-zstd", 0)]);
  assertEquals(lostTotals([BASELINE_LOST, second]), [
    { method: "gangway", runs: 2, migrated: 8, lost: 0, crashed: 0 },
    { method: "qemu", runs: 2, migrated: 8, lost: 1, crashed: 1 },
    { method: "qemu-zstd", runs: 2, migrated: 8, lost: 2, crashed: 2 },
  ]);
  const summary = sweepSummary(
    [{ axis: "guests", points: [BASELINE_LOST, second] }],
    "deno task lab -- --sweep-guests 4,4",
  );
  assert(summary.includes("## Guests kept alive, over all runs"), summary);
  assert(summary.includes("| qemu-zstd | 2 | 8 | 2 | 2 |"), summary);
  assert(summary.includes("| gangway | 2 | 8 | 0 | 0 |"), summary);
  assert(summary.includes("- 4 x 256 MiB, qemu: qemu-0: its kernel crashed"), summary);
  assert(summary.includes("Of the QEMU methods' losses: likely QEMU's own bug"), summary);
  assert(summary.includes("guest RAM: gangway shared file, qemu anonymous"), summary);
  // A larger point whose RAM files had no room for huge pages: each kind with its points.
  const large = run([{ ...measured("gangway", 0) }, measured("qemu", 0)]);
  large.config = { ...large.config, guests: 24, memoryMiB: 512 };
  const mixed = sweepSummary([{
    axis: "guests",
    points: [
      run([{ ...measured("gangway", 0), hugePages: true }, measured("qemu", 0)]),
      large,
    ],
  }], "deno task lab -- --sweep-guests 4,24");
  assert(
    mixed.includes(
      "guest RAM: gangway shared file, huge pages (4 x 256 MiB); shared file (24 x 512 MiB), " +
        "qemu anonymous.",
    ),
    mixed,
  );
});

Deno.test("checkResumed() reports a guest whose kernel crashed at the target as such, not as silent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "gangway-resumed-" });
  try {
    const sourceLog = `${dir}/source.serial.log`;
    const targetLog = `${dir}/target.serial.log`;
    await Deno.writeTextFile(sourceLog, "gangway-heartbeat 40 checksum-ok 13\r\n");
    await Deno.writeTextFile(
      targetLog,
      [
        "[   52.118734] list_del corruption. prev->next should be ffffd6a3c0219848, but was ffffd6a3c0219808.",
        "[   52.120388] kernel BUG at lib/list_debug.c:59!",
        "[   52.140000] Kernel panic - not syncing: Fatal exception",
        "",
      ].join("\r\n"),
    );
    // The destination's QEMU exited (panic=-1 and -no-reboot), as a crashed guest's does.
    const destination = {
      name: "vm1-target",
      serialLog: targetLog,
      waitForHeartbeat: (options: { after?: number; timeoutMs?: number }) =>
        waitForHeartbeat(targetLog, { ...options, abortReason: () => "QEMU exited" }),
    } as unknown as QemuGuest;
    const check = await checkResumed(sourceLog, destination, 1_000);
    assertEquals(check.resumed, false);
    assertEquals(
      check.detail,
      "its kernel crashed at the target (corruption): list_del corruption. prev->next should be " +
        "ffffd6a3c0219848, but was ffffd6a3c0219808. | kernel BUG at lib/list_debug.c:59!",
    );
    assertEquals(check.kernelCrash?.where, "target");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
