import { assert, assertEquals, assertSameBytes, assertThrows } from "./_assert.ts";
import { compress, compressBound, CompressJob, decompress } from "../src/native/compression.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { CompressionPolicy, PROBE_INTERVAL_MS } from "../src/transfer/compression_policy.ts";
import { FrameFlag, ProtocolError } from "../src/transfer/protocol.ts";
import type { SocketSample } from "../src/native/connection_socket.ts";
import { decodePages, pagesDataOffset } from "../src/transfer/page_frames.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";

/** A page that compresses (a few distinct bytes in runs), its own for each seed. */
function textPage(seed: number): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) page[i] = 97 + ((i >> 4) + seed) % 7;
  new DataView(page.buffer).setUint32(0, seed + 1, true);
  return page;
}

Deno.test("compress() and decompress() round-trip and decompress() wants the exact size", () => {
  const src = new Uint8Array([...textPage(1), ...textPage(2)]);
  const dst = new Uint8Array(compressBound(src.length));
  const size = compress(src, dst);
  assert(size < src.length / 4, `${size} bytes`);
  const out = new Uint8Array(src.length);
  assert(decompress(dst.subarray(0, size), out));
  assertSameBytes(out, src);
  assertEquals(decompress(dst.subarray(0, size), new Uint8Array(src.length - 1)), false);
  assertEquals(decompress(dst.subarray(0, size), new Uint8Array(src.length + PAGE_SIZE)), false);
  assertEquals(decompress(Uint8Array.of(1, 2, 3), out), false);
});

Deno.test("a CompressJob compresses on its own thread as compress() does, one run at a time", () => {
  const src = new Uint8Array([...textPage(3), ...textPage(4), ...textPage(5)]);
  const expected = new Uint8Array(compressBound(src.length));
  const expectedSize = compress(src, expected);
  using job = new CompressJob();
  assertThrows(() => job.finish(), Error, "Cannot finish compressing pages: no run was started");
  for (let run = 0; run < 3; run++) {
    const dst = new Uint8Array(compressBound(src.length));
    job.start(src, dst);
    assertThrows(() => job.start(src, dst), Error, "Cannot start compressing pages");
    const { size, ms } = job.finish();
    assertEquals(size, expectedSize);
    assertSameBytes(dst.subarray(0, size), expected.subarray(0, expectedSize));
    assert(ms >= 0);
  }
  job.start(src, new Uint8Array(8));
  assertThrows(() => job.finish(), Error, "does not fit the output buffer");
  const last = new Uint8Array(compressBound(src.length));
  job.start(src, last);
  job.close(); // waits for the run started last
  assertSameBytes(last.subarray(0, expectedSize), expected.subarray(0, expectedSize));
  job.close();
  assertThrows(() => job.start(src, expected), Error, "closed");
});

Deno.test("compressBound() refuses sizes whose bound does not fit in 32 bits", () => {
  assert(compressBound(PAGE_SIZE) > PAGE_SIZE);
  assertThrows(() => compressBound(2 ** 32 - 1), RangeError, "could exceed 4 GiB");
});

Deno.test("compress() and decompress() are safe from several Deno workers at once", async () => {
  const workers = [0, 1].map(() =>
    new Worker(new URL("./_compression_worker.ts", import.meta.url), { type: "module" })
  );
  try {
    const failures = await Promise.all(
      workers.map((worker, seed) =>
        new Promise<number>((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<number>) => resolve(event.data);
          worker.onerror = (event) => reject(new Error(event.message));
          worker.postMessage({ seed, iterations: 120 });
        })
      ),
    );
    assertEquals(failures, [0, 0]);
  } finally {
    for (const worker of workers) worker.terminate();
  }
});

Deno.test("transferGang() with zstd sends compressible pages compressed and the target stays exact", async () => {
  const pages = Array.from({ length: 64 }, (_, p) => (p % 2 ? textPage(p) : patternPage(p)));
  const path = makeRamFile(shmPath("zstd"), pages);
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    const report = await transferGang(gang, await receiver.connect(), { compression: "zstd" });
    assert(report.compression.frames > 0);
    assert(report.compression.compressedBytes < report.compression.rawBytes);
    assert(report.bytesOnWire < 64 * PAGE_SIZE * 0.75, `${report.bytesOnWire} bytes on the wire`);
    assertSameBytes(readRamFile(`${receiver.dir}/vm`), readRamFile(path));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("transferGang() never compresses with compression none", async () => {
  const path = makeRamFile(shmPath("plain"), Array.from({ length: 16 }, (_, p) => textPage(p)));
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    const report = await transferGang(gang, await receiver.connect(), { compression: "none" });
    assertEquals(report.compression.frames, 0);
    assert(report.bytesOnWire > 16 * PAGE_SIZE);
  } finally {
    await removeFiles(path);
  }
});

/** A sender's frames on a fake clock: its own work, and its waits for the stream and zstd. */
interface Pace {
  /** Raw page bytes per frame. */
  raw: number;
  /** The sender's own work per frame (scan, plan, framing). */
  busyMs: number;
  /** Its wait for the stream per frame. */
  linkWaitMs: number;
  /** Its wait for zstd per frame it compresses (zstd runs on another thread). */
  zstdWaitMs: number;
  /** zstd's time and output size for a frame it compresses. */
  zstdMs: number;
  compressed: number;
}

/** A fake sender: its waits, as the policy reads them. */
function fakeSender(): { streamBytesPerSecond: number; waits: { link: number; zstd: number } } {
  return { streamBytesPerSecond: 0, waits: { link: 0, zstd: 0 } };
}

/** Runs `frames` frames; returns how many were compressed. */
function runFrames(
  policy: CompressionPolicy,
  clock: { now: number },
  sender: ReturnType<typeof fakeSender>,
  pace: Pace,
  frames: number,
): number {
  let compressed = 0;
  for (let i = 0; i < frames; i++) {
    clock.now += pace.busyMs + pace.linkWaitMs;
    sender.waits.link += pace.linkWaitMs / 1000;
    if (policy.shouldCompress(pace.raw)) {
      compressed++;
      clock.now += pace.zstdWaitMs;
      sender.waits.zstd += pace.zstdWaitMs / 1000;
      policy.record(pace.raw, pace.compressed, pace.zstdMs);
    }
  }
  return compressed;
}

/** 512 KiB frames; the sender's own work at about 520 MB/s, zstd at 400 MB/s to 0.3. */
const TYPICAL: Pace = {
  raw: 524288,
  busyMs: 1,
  linkWaitMs: 0,
  zstdWaitMs: 0,
  zstdMs: 1.3,
  compressed: 157286,
};

Deno.test("CompressionPolicy compresses every frame while the stream holds the sender up (1 Gbit/s)", () => {
  const clock = { now: 0 };
  const sender = fakeSender();
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  assertEquals(policy.shouldCompress(TYPICAL.raw), true, "nothing measured: links are slower");
  const waiting = { ...TYPICAL, linkWaitMs: 3 };
  assertEquals(runFrames(policy, clock, sender, waiting, 200), 200);
});

Deno.test("CompressionPolicy keeps compressing while zstd keeps up on its own threads and nothing holds the sender up", () => {
  const clock = { now: 0 };
  const sender = fakeSender();
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  assertEquals(runFrames(policy, clock, sender, TYPICAL, 300), 300);
  const { cpuBytesPerSecond, share } = policy.estimate;
  assert(Math.abs(cpuBytesPerSecond - 524e6) < 10e6, `the sender's pace: ${cpuBytesPerSecond}`);
  assertEquals(share, 1);
});

/** A stream's rate on a 10 Gbit/s link, and on a Gigabit one, in bytes per second. */
const TEN_GBIT = 1.2e9;
const GBIT = 117e6;

Deno.test("CompressionPolicy compresses nothing but probes while zstd holds the sender up and the link has room (10 Gbit/s)", () => {
  const clock = { now: 0 };
  const sender = { ...fakeSender(), streamBytesPerSecond: TEN_GBIT };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  const zstdBound = { ...TYPICAL, zstdWaitMs: 1 };
  runFrames(policy, clock, sender, zstdBound, 400);
  const started = clock.now;
  const compressed = runFrames(policy, clock, sender, zstdBound, 500);
  const probes = Math.ceil((clock.now - started) / PROBE_INTERVAL_MS);
  assert(compressed <= probes, `${compressed} frames compressed, ${probes} probes`);
  assert(compressed >= 1, "it still measures zstd again now and then");
  assertEquals(policy.estimate.share, 0);
});

Deno.test("CompressionPolicy keeps compressing every frame while zstd holds the sender up for less than its savings are worth on the link (a Gigabit link, cores the bottleneck)", () => {
  const clock = { now: 0 };
  const sender = { ...fakeSender(), streamBytesPerSecond: GBIT };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  // 3 ms for zstd per frame; the 358 KiB it saves take 3.1 ms on the link.
  const coresBound = { ...TYPICAL, zstdWaitMs: 3 };
  assertEquals(runFrames(policy, clock, sender, coresBound, 400), 400);
  // Ten times slower, zstd costs more than it saves: fewer frames compressed.
  const slowZstd = { ...TYPICAL, zstdWaitMs: 30 };
  assert(runFrames(policy, clock, sender, slowZstd, 400) < 400);
  assert(policy.estimate.share < 1, `share ${policy.estimate.share}`);
});

Deno.test("CompressionPolicy keeps compressing every frame while the sender waits for zstd and for the stream both (a Gigabit link on a busy host)", () => {
  const clock = { now: 0 };
  const sender = fakeSender();
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  const both = { ...TYPICAL, linkWaitMs: 2, zstdWaitMs: 3 };
  assertEquals(runFrames(policy, clock, sender, both, 300), 300);
});

Deno.test("CompressionPolicy pays nothing for data that does not compress", () => {
  const clock = { now: 0 };
  const sender = fakeSender();
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  // The link holds the sender up, but zstd saves no byte of these random pages.
  const random = { ...TYPICAL, linkWaitMs: 3, zstdMs: 0.33, compressed: 524288 };
  runFrames(policy, clock, sender, random, 20);
  const started = clock.now;
  const compressed = runFrames(policy, clock, sender, random, 500);
  const probes = Math.ceil((clock.now - started) / PROBE_INTERVAL_MS);
  assert(compressed <= probes, `${compressed} frames compressed, ${probes} probes`);
  assertEquals(policy.estimate.share, 0);
});

Deno.test("CompressionPolicy compresses again once the link holds the sender up after zstd did", () => {
  const clock = { now: 0 };
  const sender = { ...fakeSender(), streamBytesPerSecond: TEN_GBIT };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  runFrames(policy, clock, sender, { ...TYPICAL, zstdWaitMs: 2 }, 400); // contention: zstd slow
  assertEquals(policy.estimate.share, 0);
  // Now the sender mostly waits for the link.
  const linkBound = { ...TYPICAL, busyMs: 0.1, linkWaitMs: 9.9 };
  runFrames(policy, clock, sender, linkBound, 20);
  assertEquals(runFrames(policy, clock, sender, linkBound, 20), 20, "every frame compressed again");
});

/** A socket as the kernel measures it: each read a new delivery-rate sample from `samples`, in turn. */
function kernelSocket(samples: SocketSample[]) {
  let next = 0;
  return () => samples[next++ % samples.length]!;
}

/** A delivery rate the kernel measured while the socket was backlogged. */
const backlogged = (bytesPerSecond: number) => ({
  bytesPerSecond,
  appLimited: false,
  unacknowledgedBytes: 0,
});
/** One it measured while the sender left the link idle (a burst). */
const burst = (bytesPerSecond: number) => ({
  bytesPerSecond,
  appLimited: true,
  unacknowledgedBytes: 0,
});

/** The lab's sender on two busy cores: waiting for zstd, and for the stream now and then, at either link speed. */
const CORES_BOUND: Pace = { ...TYPICAL, busyMs: 2, linkWaitMs: 0.3, zstdWaitMs: 1.5 };

Deno.test("CompressionPolicy stops compressing and looking for similar pages once the kernel says the link carries far more than the sender makes (10 Gbit/s, cores the bottleneck)", () => {
  // Without the kernel's word the waits say nothing of the link: the stream holds the sender up
  // a little, so it compresses everything.
  const blind = { ...fakeSender(), streamBytesPerSecond: 130e6 };
  const clock = { now: 0 };
  const without = new CompressionPolicy("auto", blind, () => clock.now);
  assertEquals(runFrames(without, clock, blind, CORES_BOUND, 300), 300);
  // Backlogged, the socket delivered about 1.1 GB/s; a burst's sample (app-limited) says little.
  const told = {
    ...fakeSender(),
    streamBytesPerSecond: 130e6,
    socket: kernelSocket([backlogged(1.1e9), burst(60e6), backlogged(1.3e9), backlogged(0.9e9)]),
  };
  const policy = new CompressionPolicy("auto", told, () => clock.now);
  assertEquals(policy.wantsDeltas, true);
  runFrames(policy, clock, told, CORES_BOUND, 100);
  const started = clock.now;
  const compressed = runFrames(policy, clock, told, CORES_BOUND, 300);
  const probes = Math.ceil((clock.now - started) / PROBE_INTERVAL_MS);
  assert(compressed <= probes, `${compressed} frames compressed, ${probes} probes`);
  const estimate = policy.estimate;
  assertEquals([estimate.share, estimate.linkFast, estimate.linkCapacityBytesPerSecond], [
    0,
    true,
    1.1e9,
  ]);
  assertEquals(policy.wantsDeltas, false, "a difference would go compressed");
});

Deno.test("CompressionPolicy judges a fast link within its first windows: the kernel is asked at every frame until it has said enough", () => {
  const clock = { now: 0 };
  // A new rate at every acknowledgement: each question gets another one.
  const rates = [1.1e9, 1.2e9, 1.0e9, 1.3e9, 1.15e9, 1.25e9, 1.05e9].map(backlogged);
  const sender = { ...fakeSender(), socket: kernelSocket(rates) };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  // Twelve frames are about two 20 ms windows of this sender's (3.8 ms a frame).
  const compressed = runFrames(policy, clock, sender, CORES_BOUND, 12);
  assert(clock.now < 50, `${clock.now} ms`);
  assertEquals([policy.estimate.linkFast, policy.estimate.share], [true, 0]);
  assert(compressed <= 7, `${compressed} of the first 12 frames compressed`);
});

Deno.test("CompressionPolicy keeps compressing on a Gigabit link whatever bursts the kernel saw", () => {
  const clock = { now: 0 };
  const sender = {
    ...fakeSender(),
    streamBytesPerSecond: 130e6,
    // Bursts into an idle link read up to 4 GB/s; backlogged, it carries 117 MB/s (one 3.8 GB/s).
    socket: kernelSocket([
      burst(4.3e9),
      backlogged(101e6),
      backlogged(3.8e9),
      backlogged(117e6),
      backlogged(96e6),
    ]),
  };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  assertEquals(runFrames(policy, clock, sender, CORES_BOUND, 400), 400);
  assertEquals(policy.estimate.linkFast, false);
  assertEquals(policy.wantsDeltas, true);
});

Deno.test("CompressionPolicy keeps compressing on a Gigabit link while the sender makes few raw bytes for a while (pages that are references)", () => {
  const clock = { now: 0 };
  const sender = {
    ...fakeSender(),
    socket: kernelSocket([101e6, 117e6, 96e6, 110e6].map(backlogged)),
  };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  runFrames(policy, clock, sender, CORES_BOUND, 100);
  // Frames of a few pages each: 17 MB/s of raw bytes, a seventh of the link.
  const sparse = { ...CORES_BOUND, raw: 65536, compressed: 19660 };
  assertEquals(runFrames(policy, clock, sender, sparse, 60), 60);
  assertEquals(policy.estimate.linkFast, false);
});

Deno.test("CompressionPolicy compresses again once the link carries little more than the sender makes", () => {
  const clock = { now: 0 };
  const rates = [1.2e9, 1.1e9, 1.3e9].map(backlogged);
  const sender = { ...fakeSender(), socket: kernelSocket(rates) };
  const policy = new CompressionPolicy("auto", sender, () => clock.now);
  runFrames(policy, clock, sender, CORES_BOUND, 200);
  assertEquals(policy.estimate.share, 0);
  // Uncompressed, the sender makes 350 MB/s; the link now carries 400 MB/s (shared with others).
  const raw = { ...TYPICAL, busyMs: 1.2, linkWaitMs: 0.3, zstdWaitMs: 1.5 };
  rates.splice(0, 3, backlogged(400e6), backlogged(410e6));
  runFrames(policy, clock, sender, raw, 100);
  assertEquals(policy.estimate.linkFast, false);
  assertEquals(runFrames(policy, clock, sender, raw, 20), 20, "the stream's waits rule again");
});

Deno.test("CompressionPolicy's zstd rate is its bytes over its time, not a mean of each frame's rate", () => {
  const policy = new CompressionPolicy("zstd", fakeSender());
  for (let i = 0; i < 50; i++) {
    policy.record(524288, 1000, 0.1); // nearly zero pages: 5.2 GB/s
    policy.record(524288, 200000, 2.6); // 200 MB/s
  }
  const rate = policy.estimate.zstdBytesPerSecond;
  assert(rate > 350e6 && rate < 420e6, `1 MiB in 2.7 ms is 388 MB/s, read ${rate}`);
});

Deno.test("CompressionPolicy counts only frames that shrank, and obeys zstd and none", () => {
  const policy = new CompressionPolicy("zstd", fakeSender());
  assertEquals(policy.shouldCompress(4096), true);
  policy.record(4096, 4100, 0.01);
  assertEquals(policy.report.frames, 0, "a frame that did not shrink is not counted as compressed");
  policy.record(4096, 1000, 0.01);
  assertEquals(policy.report, {
    mode: "zstd",
    frames: 1,
    rawBytes: 4096,
    compressedBytes: 1000,
    deltaPages: 0,
  });
  assertEquals(
    new CompressionPolicy("none", fakeSender()).shouldCompress(4096),
    false,
  );
});

Deno.test("decodePages() refuses compressed data that is not n pages", () => {
  const raw = textPage(3);
  const z = new Uint8Array(compressBound(raw.length));
  const size = compress(raw, z);
  const body = new Uint8Array(pagesDataOffset(2) + size); // two entries, one page of data
  new DataView(body.buffer).setUint32(0, 2, true);
  body.set(z.subarray(0, size), pagesDataOffset(2));
  assertThrows(
    () => decodePages(body, FrameFlag.Compressed),
    ProtocolError,
    "no valid zstd data of 2 pages",
  );
});
