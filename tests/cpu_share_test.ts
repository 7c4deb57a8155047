import { assertEquals, assertThrows } from "./_assert.ts";
import { getPriority } from "node:os";
import { guestsWeight, lendCpuShare, niceForThreads } from "../src/cpu_share.ts";
import { kernelTakesSlices, threadNices, threadSlices } from "./_proc.ts";
import { SHORTEST_SLICE_US } from "../src/native/thread_priority.ts";

Deno.test("niceForThreads gives the weight of N ordinary threads, within bounds", () => {
  // The kernel's weights: nice 0 = 1024, -3 = 1991 (~2x), -6 = 3906 (~4x), -14 = 23254 (~23x).
  assertEquals([1, 2, 4, 8, 24].map(niceForThreads), [0, -3, -6, -9, -14]);
  assertEquals(niceForThreads(1000), -15);
  assertThrows(() => niceForThreads(0), RangeError, "need at least 1");
});

Deno.test("a migration's two busy threads share the weight of QEMU's three threads a guest", () => {
  assertEquals([1, 4, 24].map(guestsWeight), [1.5, 6, 36]);
  assertEquals([1, 2, 4, 8, 24].map((n) => niceForThreads(guestsWeight(n))), [
    -2,
    -5,
    -8,
    -11,
    -15,
  ]);
});

Deno.test("claimCpuShare raises the priority of a process by the gang's size", async () => {
  // In a child process, so the test runner keeps its own priority.
  const code = `
    import { claimCpuShare } from ${
    JSON.stringify(new URL("../src/cpu_share.ts", import.meta.url).href)
  };
    console.log(JSON.stringify([claimCpuShare(0), claimCpuShare(4), claimCpuShare(2)]));`;
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
  }).output();
  assertEquals(success, true);
  const [none, first, second] = JSON.parse(new TextDecoder().decode(stdout));
  assertEquals(none.raised, false, "no guests, nothing to claim");
  if (Deno.uid() === 0) {
    assertEquals(first, { nice: -8, raised: true });
    // Never lowered again by a smaller claim.
    assertEquals(second, { nice: -8, raised: false });
  } else {
    assertEquals(first.raised, false);
  }
});

Deno.test("claimCpuShare without --allow-sys changes nothing and does not throw", async () => {
  const code = `
    import { claimCpuShare } from ${
    JSON.stringify(new URL("../src/cpu_share.ts", import.meta.url).href)
  };
    console.log(JSON.stringify(claimCpuShare(4)));`;
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", `data:application/typescript,${encodeURIComponent(code)}`],
  }).output();
  assertEquals(success, true, new TextDecoder().decode(stderr));
  assertEquals(JSON.parse(new TextDecoder().decode(stdout)).raised, false);
});

Deno.test("a program started with normalPriorityPrefix runs at the priority the process had before its claim", async () => {
  // `nice` alone prints its own niceness: with the prefix, a guest's; without, an inherited one.
  const code = `
    import { claimCpuShare, normalPriorityPrefix } from ${
    JSON.stringify(new URL("../src/cpu_share.ts", import.meta.url).href)
  };
    const niceOf = async (argv) =>
      new TextDecoder().decode((await new Deno.Command(argv[0], { args: argv.slice(1) }).output()).stdout).trim();
    const before = await niceOf([...normalPriorityPrefix(), "nice"]);
    const { raised } = claimCpuShare(4);
    console.log(JSON.stringify({ before, raised, inherited: await niceOf(["nice"]),
      prefixed: await niceOf([...normalPriorityPrefix(), "nice"]) }));`;
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
  }).output();
  assertEquals(success, true, new TextDecoder().decode(stderr));
  const seen = JSON.parse(new TextDecoder().decode(stdout));
  assertEquals(seen.prefixed, seen.before);
  if (seen.raised) assertEquals(Number(seen.inherited), -8);
  else assertEquals(seen.inherited, seen.before);
});

Deno.test("claimCpuShare raises every thread of the process, those made before the claim too, with the shortest slice, and releaseCpuShare lowers them all", async () => {
  if (Deno.uid() !== 0) return; // raising a priority needs root or CAP_SYS_NICE: nothing would change
  const code = `
    import { claimCpuShare, releaseCpuShare } from ${
    JSON.stringify(new URL("../src/cpu_share.ts", import.meta.url).href)
  };
    import { threadNices, threadSlices } from ${
    JSON.stringify(new URL("./_proc.ts", import.meta.url).href)
  };
    // Threads made before the claim (Deno's threads for blocking calls) must get it too.
    await Promise.all([1, 2, 3].map(() => Deno.readTextFile("/proc/self/stat")));
    const seen = async () => ({ nices: await threadNices(Deno.pid), slices: await threadSlices(Deno.pid) });
    const before = await seen();
    claimCpuShare(4);
    const claimed = await seen();
    releaseCpuShare();
    console.log(JSON.stringify({ before, claimed, released: await seen() }));`;
  const { stdout, stderr, success } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
  }).output();
  assertEquals(success, true, new TextDecoder().decode(stderr));
  const { before, claimed, released } = JSON.parse(new TextDecoder().decode(stdout));
  assertEquals(claimed.nices.length > 1, true, "Deno runs more than one thread");
  assertEquals(new Set(claimed.nices), new Set([-8]), `every thread's nice: ${claimed.nices}`);
  assertEquals(new Set(released.nices), new Set([0]), `every thread's nice: ${released.nices}`);
  if (!kernelTakesSlices()) return; // Linux before 6.12: one slice for all, nothing to see
  const kernels = new Set(before.slices);
  assertEquals(kernels.size, 1, `the kernel's default slice, before the claim: ${before.slices}`);
  assertEquals(kernels.has(SHORTEST_SLICE_US * 1000), false, "the default is not the shortest");
  assertEquals(new Set(claimed.slices), new Set([SHORTEST_SLICE_US * 1000]), `${claimed.slices}`);
  assertEquals(new Set(released.slices), kernels, `every thread's slice: ${released.slices}`);
});

Deno.test("lendCpuShare gives every thread of another process this one's priority, and gives its own back", async () => {
  // A Deno child at nice 5 runs several threads (made before its script runs); this process, the
  // lender, runs at its own.
  const child = new Deno.Command("nice", {
    args: [
      "-n",
      "5",
      Deno.execPath(),
      "eval",
      'console.log("ready"); setInterval(() => {}, 60_000)',
    ],
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    assertEquals((await lines.read()).value?.trim(), "ready");
    const lender = getPriority();
    assertEquals((await threadNices(child.pid)).length > 1, true, "Deno runs more than one thread");
    const kernels = new Set(await threadSlices(child.pid));
    const giveBack = lendCpuShare(child.pid);
    const lent = await threadNices(child.pid);
    const lentSlices = await threadSlices(child.pid);
    giveBack();
    giveBack(); // a second call changes nothing
    const back = await threadNices(child.pid);
    const raised = Deno.uid() === 0 ? lender : 5; // raising needs CAP_SYS_NICE
    assertEquals(new Set(lent), new Set([raised]), `every thread's nice while lent: ${lent}`);
    assertEquals(new Set(back), new Set([5]), `every thread's nice given back: ${back}`);
    if (Deno.uid() === 0 && kernelTakesSlices()) {
      assertEquals(new Set(lentSlices), new Set([SHORTEST_SLICE_US * 1000]), `${lentSlices}`);
      assertEquals(
        new Set(await threadSlices(child.pid)),
        kernels,
        "the kernel's slice, given back",
      );
    }
  } finally {
    child.kill();
    await child.status;
    lines.releaseLock();
  }
  // A process that is gone: nothing to do, nothing thrown.
  lendCpuShare(child.pid)();
});
