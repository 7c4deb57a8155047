/**
 * The lab end to end, as `deno task lab` runs it (same permissions): a
 * short run of two small guests over a shaped link, and a run interrupted
 * with Ctrl-C during its migration. Both must leave nothing behind.
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { assert, assertEquals } from "./_assert.ts";
import { findQemus } from "../src/qemu/discover.ts";
import { listNamespaces } from "../src/lab/netns_names.ts";
import { cleanStaleLabs, labRunNames, liveLabRuns } from "../src/lab/stale_runs.ts";
import { LabSession } from "../src/lab/session.ts";
import { namedQemus } from "../src/lab/_processes.ts";
import { isRunning } from "../src/_processes.ts";
import { mountsIn } from "../src/lab/_files.ts";
import { hugeTmpfsRefused } from "../src/lab/huge_tmpfs.ts";
import { hostMemory } from "../src/lab/memory_budget.ts";

const ROOT = new URL("../", import.meta.url);
const LAB = new URL("src/cli/lab.ts", ROOT).href;

/** The permissions of the `lab` task in deno.json: the test runs with exactly those. */
async function taskPermissions(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task = String(config.tasks.lab);
  const flags = task.split(/\s+/).filter((word) => word.startsWith("--allow-"));
  assert(flags.length > 0, `no permissions in the lab task: ${task}`);
  return flags;
}

async function startLab(args: string[]): Promise<Deno.ChildProcess> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...await taskPermissions(), LAB, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** What a lab process (by its pid) could have left: namespaces, QEMUs, files, processes. */
async function leftovers(pid: number): Promise<string[]> {
  const left: string[] = [];
  for (const ns of await listNamespaces()) {
    if (ns.startsWith(`gw-${pid}-`)) left.push(`namespace ${ns}`);
  }
  const { usable, unusable } = await findQemus();
  for (const q of usable) {
    if (q.commandLine.instance.name.startsWith(`lab-${pid}-`)) left.push(`QEMU ${q.pid}`);
  }
  for (const q of unusable) {
    if (q.argv.join(" ").includes(`lab-${pid}-`)) left.push(`QEMU ${q.pid}`);
  }
  const ls = await new Deno.Command("ls", { args: ["-1", "/dev/shm", "/tmp"] }).output();
  for (const name of new TextDecoder().decode(ls.stdout).split("\n")) {
    if (name.startsWith(`gangway-lab-${pid}-`)) left.push(`file ${name}`);
  }
  const mounts = await Deno.readTextFile("/proc/self/mounts");
  for (const point of mountsIn(mounts, "/dev/shm")) {
    if (point.includes(`gangway-lab-${pid}-`)) left.push(`mount ${point}`);
  }
  const ps = await new Deno.Command("ps", { args: ["-eo", "pid=,args="] }).output();
  for (const line of new TextDecoder().decode(ps.stdout).split("\n")) {
    if (line.includes(`gangway-lab-${pid}-`) || line.includes(`lab-${pid}-`)) {
      left.push(`process ${line.trim()}`);
    }
  }
  return left;
}

/**
 * Every guest of a method came back at the target, or, for a QEMU method,
 * was reported lost with QEMU's known TCG bug as the likely cause (QEMU
 * before 9.0 under TCG loses a guest now and then: docs/lab.md). Gangway
 * must lose none.
 */
function assertEveryGuestAccounted(
  key: string,
  m: { resumed: number; lost: unknown[]; knownIssue?: string },
  guests: number,
) {
  const lost = JSON.stringify(m.lost);
  if (key === "gangway" || m.lost.length === 0) {
    assertEquals(m.resumed, guests, `${key}: ${lost}`);
    assertEquals(m.lost, [], key);
    return;
  }
  assertEquals(m.resumed + m.lost.length, guests, `${key}: ${lost}`);
  assert(
    typeof m.knownIssue === "string" && m.knownIssue.includes("QEMU's own bug"),
    `${key} lost ${lost} with no known QEMU issue to explain it: ${JSON.stringify(m)}`,
  );
}

/**
 * Runs a short lab (2 guests of 128 MiB, 1 s idle, 1gbit) on `network` to its
 * end, asserts it succeeded, and returns its summary, its JSON report and its pid.
 */
async function runShortLab(network: "netns" | "loopback") {
  const json = await Deno.makeTempFile({ prefix: "gangway-lab-test-", suffix: ".json" });
  try {
    const lab = await startLab([
      ...["--guests", "2", "--memory", "128M", "--link", "1gbit", "--idle", "1"],
      ...["--network", network, "--json", json],
    ]);
    const [out, err, status] = await Promise.all([
      new Response(lab.stdout).text(),
      new Response(lab.stderr).text(),
      lab.status,
    ]);
    assertEquals(status.code, 0, err);
    return { out, report: JSON.parse(await Deno.readTextFile(json)), pid: lab.pid };
  } finally {
    await Deno.remove(json).catch(() => {});
  }
}

Deno.test("a short lab run migrates two guests both ways, reports every field and leaves nothing", async () => {
  const { out, report, pid } = await runShortLab("netns");
  assert(out.includes("gangway / qemu: traffic"), out);
  assertEquals(
    [report.guests, report.memoryBytes, report.link, report.workload],
    [2, 128 * 2 ** 20, "1gbit", "idle"],
  );
  assertEquals(report.network.mode, "netns");
  assertEquals(report.kernelArgs, []);
  for (const key of ["gangway", "qemu", "qemuZstd"]) {
    const m = report[key];
    assertEveryGuestAccounted(key, m, 2);
    assert(m.bytesOnWire > 0 && m.tmtSeconds > 0, `${key}: ${JSON.stringify(m)}`);
    assertEquals(m.downtimeMs.length, 2);
    assert(m.loadAverage >= 0, `${key}: load average ${m.loadAverage}`);
    assert(m.downtimeMs.every((ms: number) => ms > 0), `${key}: ${m.downtimeMs}`);
    // The link carried what the tool wrote plus headers (and nothing else: it is private);
    // QEMU counts multifd zstd's pages before compression, so its own count is larger.
    if (key === "qemuZstd") continue;
    assert(m.bytesOnWire >= m.toolBytes, `${key}: ${m.bytesOnWire} < ${m.toolBytes}`);
    assert(m.bytesOnWire < m.toolBytes * 1.05, `${key}: ${m.bytesOnWire} vs ${m.toolBytes}`);
  }
  assertEquals(report.gangway.verified, true);
  // Two small guests fit in memory whole: where the kernel gives QEMU's anonymous RAM huge pages,
  // gangway's sources get a tmpfs of them (huge_tmpfs.ts), and the kernel did give them some.
  const { hugePages } = await hostMemory();
  const huge = hugePages && await hugeTmpfsRefused() === undefined;
  assertEquals([report.gangway.hugePages, report.memory.hugePageFiles], [huge, hugePages]);
  assertEquals(typeof report.qemu.hugePages, "boolean");
  assertEquals(report.gangway.transport, "tls");
  assertEquals(report.gangway.compression.mode, "auto");
  assert(report.gangway.rounds >= 2, `rounds: ${report.gangway.rounds}`);
  assertEquals(report.qemu.rounds, undefined);
  assert(report.trafficRatio > 0 && report.tmtRatio > 0, JSON.stringify(report));
  // The ratios divide by the best QEMU method of the run: the one of the shorter TMT.
  const best = [report.qemu, report.qemuZstd].sort((a, b) => a.tmtSeconds - b.tmtSeconds)[0];
  assertEquals(
    report.trafficRatio,
    Math.round(report.gangway.bytesOnWire / best.bytesOnWire * 1000) / 1000,
  );
  assertEquals(report.goals, [], "goals are judged from 4 guests on");
  assertEquals(await leftovers(pid), []);
});

Deno.test("a lab run without namespaces migrates over the host's loopback, capped at the link's rate, and says so", async () => {
  const { out, report, pid } = await runShortLab("loopback");
  assert(out.includes("host loopback 127.0.0.1"), out);
  assertEquals(report.network.mode, "loopback");
  assertEquals(report.network.reason, "loopback mode was asked for");
  for (const key of ["gangway", "qemu"]) {
    const m = report[key];
    assertEveryGuestAccounted(key, m, 2);
    // The loopback's counters see every byte of the host: at least what the tool wrote.
    assert(m.bytesOnWire >= m.toolBytes, `${key}: ${m.bytesOnWire} < ${m.toolBytes}`);
    // Capped at 1 Gbit/s (125 MB/s), with some slack for the pacer's first burst.
    const rate = m.toolBytes / m.tmtSeconds;
    assert(rate < 160e6, `${key}: ${rate} B/s is over the cap`);
  }
  assertEquals(report.gangway.verified, true);
  assertEquals(await leftovers(pid), []);
});

Deno.test("Ctrl-C during the migration ends the lab with 130 and leaves no namespace, QEMU or RAM file", async () => {
  // 100mbit: gangway's 2 x 128 MiB take seconds, so the signal lands mid-migration.
  const lab = await startLab([
    ...["--guests", "2", "--memory", "128M", "--link", "100mbit", "--idle", "1"],
    ...["--network", "netns"],
  ]);
  const stdout = new Response(lab.stdout).text();
  let seen = "";
  let signalled = false;
  for await (const text of lab.stderr.pipeThrough(new TextDecoderStream())) {
    seen += text;
    if (!signalled && seen.includes("Scanning and sending the gang's RAM")) {
      lab.kill("SIGINT");
      signalled = true;
    }
  }
  const status = await lab.status;
  await stdout;
  assert(signalled, `the migration never started:\n${seen}`);
  assertEquals(status.code, 130, seen);
  assert(seen.includes("Interrupted (SIGINT): cleaning up first"), seen);
  assert(seen.includes("Cleaned up after SIGINT"), seen);
  // Once: the gang runner the lab ends leaves the telling to the lab.
  assertEquals(seen.split("Interrupted (").length, 2, seen);
  assert(!seen.includes("did not resume"), seen);
  assertEquals(await leftovers(lab.pid), []);
});

Deno.test("cleanStaleLabs() removes the RAM and run directories of a lab run whose process is gone, its mounts first", async () => {
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  // Named as LabSession.open names them, with Deno.makeTempDir's suffix on the run directories.
  const dir = labRunNames.ramDir(`${gone.pid}-0badc0de`);
  const live = labRunNames.ramDir(`${Deno.pid}-0badc0de`);
  const runDir = join(tmpdir(), `${labRunNames.runDirPrefix(`${gone.pid}-0badc0de`)}x1y2z3`);
  const liveRunDir = join(tmpdir(), `${labRunNames.runDirPrefix(`${Deno.pid}-0badc0de`)}x1y2z3`);
  await new Deno.Command("mkdir", {
    args: ["-p", `${dir}/source`, live, `${runDir}/target`, liveRunDir],
  }).output();
  // Its source guests' tmpfs of huge pages, still mounted: unmounted first, then removed.
  const mounted = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "gangway-lab-test", `${dir}/source`],
  }).output();
  assert(mounted.success, new TextDecoder().decode(mounted.stderr));
  try {
    assert(await cleanStaleLabs() >= 2);
    assertEquals(mountsIn(await Deno.readTextFile("/proc/self/mounts"), dir), []);
    const exists = async (path: string) =>
      (await new Deno.Command("test", { args: ["-e", path] }).output()).success;
    assert(!(await exists(dir)), `${dir} is left`);
    assert(!(await exists(runDir)), `${runDir} is left`);
    assert(await exists(live), "a live run's directory was removed");
    assert(await exists(liveRunDir), "a live run's run directory was removed");
  } finally {
    await new Deno.Command("umount", { args: ["--lazy", `${dir}/source`] }).output();
    await new Deno.Command("rm", { args: ["-rf", dir, live, runDir, liveRunDir] }).output();
  }
});

Deno.test("cleanStaleLabs() kills the QEMUs named by a lab run whose process is gone, and no other", async () => {
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  // Stand-ins for QEMUs: a shell under QEMU's binary name (ps lists it so), named as
  // LabSession.open names a run's guests; it waits on its stdin until killed.
  const dir = await Deno.makeTempDir();
  const binary = join(dir, "qemu-system-x86_64");
  await Deno.copyFile("/bin/bash", binary);
  const fakeQemu = (id: string) =>
    new Deno.Command(binary, {
      args: ["-c", "read line", "-name", `${labRunNames.qemuPrefix(id)}g1`],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
  const stale = fakeQemu(`${gone.pid}-0badc0de`);
  const live = fakeQemu(`${Deno.pid}-0badc0de`);
  // Another lab run's prefix with more after the pid than its hex id: not a lab run's name.
  const other = fakeQemu(`${gone.pid}-0badc0de.x`);
  try {
    const listed = async () => (await namedQemus()).map((q) => q.pid);
    const seen = await listed();
    for (const q of [stale, live, other]) assert(seen.includes(q.pid), `${q.pid} not listed`);
    assert(await cleanStaleLabs() >= 1);
    // Dead once cleanStaleLabs() returns (it waits for its kills); a zombie until reaped below.
    assert(!isRunning(stale.pid), "the stale run's QEMU was not killed");
    assert(isRunning(live.pid) && isRunning(other.pid), "a QEMU of no stale run was killed");
  } finally {
    for (const child of [stale, live, other]) {
      try {
        child.kill("SIGKILL");
      } catch {
        // ended already
      }
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a lab run refuses to start while another process's lab run is running, and a reused pid is no run", async () => {
  // A lab run as another Deno process, by its run directory; and a pid that is not Deno's.
  const deno = new Deno.Command(Deno.execPath(), {
    args: ["eval", "await new Promise((resolve) => setTimeout(resolve, 60_000))"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const other = new Deno.Command("sleep", { args: ["60"] }).spawn();
  const runDir = join(tmpdir(), `${labRunNames.runDirPrefix(`${deno.pid}-0badc0de`)}x1y2z3`);
  const reused = join(tmpdir(), `${labRunNames.runDirPrefix(`${other.pid}-0badc0de`)}x1y2z3`);
  await Deno.mkdir(runDir);
  await Deno.mkdir(reused);
  try {
    assertEquals(await liveLabRuns(), [{ pid: deno.pid, runDir }]);
    const error = await LabSession.open({ handleSignals: false }).then(
      async (session) => void await session.close(),
      (error: Error) => error,
    );
    assert(error, "a second lab run started");
    assert(
      error.message.includes(`another one is running (process ${deno.pid}, ${runDir})`),
      error.message,
    );
    // Once it is gone, nothing is running.
    deno.kill("SIGKILL");
    await deno.status;
    assertEquals(await liveLabRuns(), []);
  } finally {
    for (const child of [deno, other]) {
      try {
        child.kill("SIGKILL");
      } catch {
        // ended already
      }
      await child.status;
    }
    await Deno.remove(runDir, { recursive: true });
    await Deno.remove(reused, { recursive: true });
  }
});
