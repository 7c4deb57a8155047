import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { formatRate, linkShape, parseRate, tbfArgs } from "../src/lab/link_rate.ts";
import { LabNetwork, SOURCE_ADDRESS, TARGET_ADDRESS } from "../src/lab/netns.ts";
import { listNamespaces, parseNamespaceName } from "../src/lab/netns_names.ts";
import { cleanStaleNetworks } from "../src/lab/netns_stale.ts";
import { measureThroughput } from "../src/lab/link_probe.ts";
import { findCpuHierarchy } from "../src/qemu/cpu_throttle.ts";

const CHILD = new URL("./lab_net_child.ts", import.meta.url).href;

Deno.test("parseRate() reads tc-style rates and none", () => {
  assertEquals(parseRate("1gbit"), 1e9);
  assertEquals(parseRate("100mbit"), 1e8);
  assertEquals(parseRate("2.5gbit"), 2.5e9);
  assertEquals(parseRate(" 10 Mbit "), 1e7);
  assertEquals(parseRate("none"), null);
  assertThrows(() => parseRate("1gbps"), Error, 'Cannot parse link rate "1gbps"');
  assertThrows(() => parseRate("fast"), Error, "expected a number with bit");
  assertThrows(() => parseRate("0bit"), Error, "below 1kbit");
});

Deno.test("formatRate() picks the largest unit that keeps the number at 1 or more", () => {
  assertEquals(formatRate(1e9), "1 Gbit/s");
  assertEquals(formatRate(941.5e6), "941.5 Mbit/s");
  assertEquals(formatRate(2.5e9), "2.5 Gbit/s");
  assertEquals(formatRate(500), "500 bit/s");
});

Deno.test("linkShape() folds Ethernet framing into the rate and sizes burst and queue", () => {
  const gigabit = linkShape(1e9);
  assertEquals(gigabit.qdiscBitsPerSecond, Math.round(1e9 * 1514 / 1538));
  assertEquals(gigabit.burstBytes, 125_000); // 1 ms of the rate
  assertEquals(gigabit.limitBytes, 1_514_000); // 1000 full frames
  const slow = linkShape(1e8);
  assertEquals(slow.burstBytes, 65_536); // one whole GSO packet
  assertEquals(linkShape(1e10).limitBytes, 12_500_000); // 10 ms of the rate
  assertEquals(
    tbfArgs("gw-src", slow).join(" "),
    `qdisc replace dev gw-src root tbf rate ${slow.qdiscBitsPerSecond}bit burst 65536 limit 1514000`,
  );
});

Deno.test("LabNetwork.create() makes two namespaces joined by an addressed, shaped veth pair", async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "1gbit" });
  assertEquals(net.mode, "netns");
  const names = await listNamespaces();
  assert(
    names.includes(net.source.namespace!) && names.includes(net.target.namespace!),
    names.join(),
  );
  assertEquals(parseNamespaceName(net.source.namespace!)?.pid, Deno.pid);
  assertEquals([net.source.address, net.target.address], [SOURCE_ADDRESS, TARGET_ADDRESS]);
  for (const host of [net.source, net.target]) {
    const links = JSON.parse(await net.run(host.side, "ip", ["-j", "addr", "show"])) as IpAddr[];
    const lo = links.find((link) => link.ifname === "lo");
    const veth = links.find((link) => link.ifname === host.device);
    assert(lo?.flags.includes("UP"), `loopback is down on ${host.side}`);
    assert(veth?.flags.includes("UP"), `${host.device} is down on ${host.side}`);
    assertEquals(veth?.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${host.address}/30`]);
    const qdiscs = await net.run(host.side, "tc", ["qdisc", "show", "dev", host.device!]);
    assert(/tbf .*rate 98\dMbit|tbf .*rate 984395Kbit/.test(qdiscs), qdiscs);
  }
  assert(net.describe().includes("tbf 1 Gbit/s each way"), net.describe());
});

Deno.test("TCP gets through the 1gbit link both ways at about Gigabit Ethernet goodput", async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "1gbit" });
  const there = await measureThroughput(net, { bytes: 60e6 });
  const back = await measureThroughput(net, { bytes: 20e6, from: "target" });
  for (const { bytes, bitsPerSecond } of [there, back]) {
    assert(bytes > 0);
    // Generous physical bounds: not faster than the link, not 4x slower.
    assert(bitsPerSecond < 1.1e9 && bitsPerSecond > 0.25e9, formatRate(bitsPerSecond));
  }
  assertEquals(there.bytes, 60e6);
});

Deno.test("the 100mbit link holds back 20 MB for over 1.2 s each way and counts its bytes", async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "100mbit" });
  const before = await net.bytes();
  const there = await measureThroughput(net, { bytes: 20e6 });
  const after = await net.bytes();
  assert(there.seconds > 1.2, `${there.seconds} s`); // 1.6 s at line rate
  const sent = after.sourceToTarget - before.sourceToTarget;
  const acks = after.targetToSource - before.targetToSource;
  assert(sent >= 20e6 && sent < 20e6 * 1.05, `${sent} bytes counted for 20 MB sent`);
  assert(acks > 0 && acks < sent * 0.02, `${acks} bytes of acknowledgements`);
  assert(after.exact);
  const back = await measureThroughput(net, { bytes: 20e6, from: "target" });
  assert(back.seconds > 1.2, `${back.seconds} s back`);
});

Deno.test("measureThroughput() gives up at its time limit and leaves no process", async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "100mbit" });
  await assertRejects(
    () => measureThroughput(net, { bytes: 100e6, timeoutMs: 500 }),
    Error,
    "Cannot measure the link: no result within 500 ms",
  );
  const pids = await new Deno.Command("ip", {
    args: ["netns", "pids", net.target.namespace!],
    stdout: "piped",
  }).output();
  assertEquals(new TextDecoder().decode(pids.stdout).trim(), "");
});

Deno.test('rate "none" leaves the link unshaped', async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "none" });
  assertEquals(net.shape, null);
  const qdiscs = await net.run("source", "tc", ["qdisc", "show", "dev", net.source.device!]);
  assert(!qdiscs.includes("tbf"), qdiscs);
  assertEquals((await measureThroughput(net, { bytes: 10e6 })).bytes, 10e6);
});

Deno.test("close() removes namespaces and link, and is safe twice", async () => {
  const net = await LabNetwork.create({ mode: "netns" });
  const server = net.spawn("target", "sleep", ["30"], { stdout: "null", stderr: "null" });
  try {
    await net.close();
    await net.close();
    const names = await listNamespaces();
    assert(!names.includes(net.source.namespace!) && !names.includes(net.target.namespace!));
    // The program inside keeps its namespace alive, but not the link.
    const links = await new Deno.Command("ip", { args: ["-o", "link"], stdout: "piped" }).output();
    assert(!new TextDecoder().decode(links.stdout).includes("gw-src"));
    await assertRejects(() => net.bytes(), Error, "it is closed");
    assertThrows(() => net.spawn("source", "true"), Error, "it is closed");
  } finally {
    server.kill();
    await server.status;
  }
});

Deno.test("two networks at once do not collide", async () => {
  const [a, b] = await Promise.all([
    LabNetwork.create({ mode: "netns" }),
    LabNetwork.create({ mode: "netns" }),
  ]);
  try {
    assert(a.source.namespace !== b.source.namespace);
    assertEquals((await measureThroughput(a, { bytes: 1e6 })).bytes, 1e6);
    assertEquals((await measureThroughput(b, { bytes: 1e6 })).bytes, 1e6);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("cleanStaleNetworks() removes what a killed run left and keeps live networks", async () => {
  await using mine = await LabNetwork.create({ mode: "netns" });
  const child = startChild("wait");
  const { namespaces } = await child.ready;
  child.process.kill("SIGKILL");
  await child.process.status;
  const left = await listNamespaces();
  assert(namespaces.every((ns) => left.includes(ns)), "a killed run cannot clean up");
  const removed = await cleanStaleNetworks();
  assertEquals(removed.filter((ns) => namespaces.includes(ns)).sort(), [...namespaces].sort());
  const names = await listNamespaces();
  assert(namespaces.every((ns) => !names.includes(ns)));
  assert(names.includes(mine.source.namespace!) && names.includes(mine.target.namespace!));
  await child.done;
});

Deno.test("exitOnSignal() runs the caller's cleanup and removes the namespaces on Ctrl-C", async () => {
  const marker = await Deno.makeTempFile({ prefix: "gangway-lab-signal-" });
  try {
    const child = startChild("signal", marker);
    const { namespaces } = await child.ready;
    child.process.kill("SIGINT");
    assertEquals((await child.process.status).code, 130);
    assertEquals(await Deno.readTextFile(marker), "cleaned up");
    // The user is told why it takes a moment, and when it is over.
    assertEquals(
      await child.stderr,
      "Interrupted (SIGINT): cleaning up first; SIGINT again exits at once\nCleaned up after SIGINT\n",
    );
    const names = await listNamespaces();
    assert(namespaces.every((ns) => !names.includes(ns)), names.join());
    await child.done;
  } finally {
    await Deno.remove(marker);
  }
});

for (const how of ["throw", "exit"] as const) {
  Deno.test(`a run that ends with ${how === "throw" ? "an uncaught error" : "Deno.exit()"} without closing leaves no namespaces`, async () => {
    const child = startChild(how);
    const { namespaces } = await child.ready;
    await child.process.status;
    const names = await listNamespaces();
    assertEquals(namespaces.length, 2);
    assert(namespaces.every((ns) => !names.includes(ns)), names.join());
    await child.done;
  });
}

Deno.test("loopback mode runs on the host, unshaped, and says why", async () => {
  await using net = await LabNetwork.create({ mode: "loopback" });
  assertEquals(net.mode, "loopback");
  assertEquals(net.reason, "loopback mode was asked for");
  assertEquals([net.source.address, net.target.address], ["127.0.0.1", "127.0.0.1"]);
  assertEquals([net.source.namespace, net.shape], [null, null]);
  assertEquals((await net.run("target", "echo", ["hello"])).trim(), "hello");
  const before = await net.bytes();
  assertEquals((await measureThroughput(net, { bytes: 5e6 })).bytes, 5e6);
  const after = await net.bytes();
  assert(!after.exact);
  assert(after.sourceToTarget - before.sourceToTarget >= 5e6);
  assert(net.describe().startsWith("host loopback 127.0.0.1, unshaped"));
});

Deno.test("auto mode falls back to loopback when namespaces cannot be made", async () => {
  // Without `ip` on PATH nothing can make a namespace: the child falls back.
  const child = startChild("exit", undefined, { PATH: "/nonexistent" });
  const { mode, reason, namespaces } = await child.ready;
  assertEquals([mode, namespaces], ["loopback", []]);
  assert(reason.includes('Cannot run "ip') && reason.includes("not found on PATH"), reason);
  await child.process.status;
  await child.done;
});

Deno.test("LabNetwork.create() rejects a rate it cannot parse", async () => {
  await assertRejects(
    () => LabNetwork.create({ mode: "netns", rate: "fast" }),
    Error,
    'Cannot parse link rate "fast"',
  );
});

Deno.test("run() says which namespace a failing command ran on", async () => {
  await using net = await LabNetwork.create({ mode: "netns" });
  await assertRejects(
    () => net.run("source", "ip", ["link", "show", "no-such-device"]),
    Error,
    `Cannot run "ip link show no-such-device" on "${net.source.namespace}": Device "no-such-device" does not exist`,
  );
});

/** What `ip -j addr` says of a device, the parts checked here. */
interface IpAddr {
  ifname: string;
  flags: string[];
  addr_info: { local: string; prefixlen: number }[];
}

interface ChildReport {
  mode: string;
  reason: string;
  namespaces: string[];
}

/** Starts tests/lab_net_child.ts: `ready` is its report, `done` reads its output to the end. */
function startChild(how: string, marker?: string, env?: Record<string, string>) {
  const args = ["run", "--allow-run", "--allow-read", "--allow-write", CHILD, how];
  const process = new Deno.Command(Deno.execPath(), {
    args: marker === undefined ? args : [...args, marker],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(process.stderr).text();
  const ready = (async () => {
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`The child ended before it reported: "${text}"`);
      text += value;
    }
    return JSON.parse(text.slice(0, text.indexOf("\n"))) as ChildReport;
  })();
  const done = ready.then(async () => {
    while (!(await reader.read()).done) { /* drain */ }
  }, () => reader.cancel());
  return { process, ready, done, stderr };
}

Deno.test("a lab host sees the machine's cgroup cpu hierarchy again once it mounts it (auto-converge)", async () => {
  await using net = await LabNetwork.create({ mode: "netns", rate: "1gbit" });
  const module = new URL("../src/lab/netns_cgroups.ts", import.meta.url).href;
  const throttle = new URL("../src/qemu/cpu_throttle.ts", import.meta.url).href;
  const code = `import { mountCpuCgroupIfHidden } from "${module}";
    import { findCpuHierarchy } from "${throttle}";
    const before = await findCpuHierarchy().then(() => "found", (e) => e.message);
    await mountCpuCgroupIfHidden();
    console.log(JSON.stringify({ before, after: await findCpuHierarchy() }));`;
  const seen = JSON.parse(
    await net.run("source", Deno.execPath(), [
      "run",
      "-A",
      `data:application/typescript,${encodeURIComponent(code)}`,
    ]),
  );
  // ip netns exec mounts a fresh sysfs over /sys: the machine's cgroups are hidden at first.
  assertEquals(seen.before, "no cgroup hierarchy with the cpu controller is mounted");
  const machine = await findCpuHierarchy();
  assertEquals(seen.after, machine);
  assertEquals(await netCgroupMounts(net), 0, "a later process of the host starts without it");
});

/** cgroup mounts another process of the lab's source host sees. */
async function netCgroupMounts(net: LabNetwork): Promise<number> {
  const text = await net.run("source", "cat", ["/proc/self/mountinfo"]);
  return text.split("\n").filter((line) => / - cgroup2? /.test(line)).length;
}
