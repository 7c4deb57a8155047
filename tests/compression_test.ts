import { assert, assertEquals, assertSameBytes, assertThrows } from "./_assert.ts";
import { compress, compressBound, decompress } from "../src/native/compression.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";
import { Gang } from "../src/scan/gang.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { CompressionPolicy, PROBE_INTERVAL_MS } from "../src/transfer/compression_policy.ts";
import { FrameFlag, ProtocolError } from "../src/transfer/protocol.ts";
import { decodePages } from "../src/transfer/page_frames.ts";
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

/** A sender's frames on a fake clock: its own work, its waits for the stream, zstd when asked. */
interface Pace {
  /** Raw page bytes per frame. */
  raw: number;
  /** The sender's own work per frame (scan, plan, framing). */
  busyMs: number;
  /** Its wait for the stream per frame. */
  waitMs: number;
  /** zstd's time and output size for a frame it compresses. */
  zstdMs: number;
  compressed: number;
}

/** Runs `frames` frames; returns how many were compressed. */
function runFrames(
  policy: CompressionPolicy,
  clock: { now: number },
  link: { streamBytesPerSecond: number; waitedSeconds: number },
  pace: Pace,
  frames: number,
): number {
  let compressed = 0;
  for (let i = 0; i < frames; i++) {
    clock.now += pace.busyMs + pace.waitMs;
    link.waitedSeconds += pace.waitMs / 1000;
    if (policy.shouldCompress(pace.raw)) {
      compressed++;
      // The sender waits for zstd (on its own thread) before the frame can go.
      clock.now += pace.zstdMs;
      link.waitedSeconds += pace.zstdMs / 1000;
      policy.record(pace.raw, pace.compressed, pace.zstdMs);
    }
  }
  return compressed;
}

/** 512 KiB frames; the sender's own work at about 520 MB/s, zstd at 400 MB/s to 0.3. */
const TYPICAL: Pace = { raw: 524288, busyMs: 1, waitMs: 0, zstdMs: 1.3, compressed: 157286 };

Deno.test("CompressionPolicy compresses every frame when even then the CPU keeps ahead of the link (1 Gbit/s)", () => {
  const clock = { now: 0 };
  const link = { streamBytesPerSecond: 0, waitedSeconds: 0 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  assertEquals(policy.shouldCompress(TYPICAL.raw), true, "nothing measured: links are slower");
  link.streamBytesPerSecond = 117e6;
  // The sender waits for the link most of the time: waits are not its work.
  const waiting = { ...TYPICAL, waitMs: 3 };
  assertEquals(runFrames(policy, clock, link, waiting, 200), 200);
});

Deno.test("CompressionPolicy compresses nothing but probes when the link is not full even uncompressed (10 Gbit/s)", () => {
  const clock = { now: 0 };
  const link = { streamBytesPerSecond: 1.2e9, waitedSeconds: 0 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  runFrames(policy, clock, link, TYPICAL, 100); // the sender's pace is measured
  const started = clock.now;
  const compressed = runFrames(policy, clock, link, TYPICAL, 500);
  const probes = Math.ceil((clock.now - started) / PROBE_INTERVAL_MS);
  assert(compressed <= probes, `${compressed} frames compressed, ${probes} probes`);
  assert(compressed >= 1, "it still measures zstd again now and then");
});

Deno.test("CompressionPolicy compresses the share of frames that keeps CPU and link equally busy", () => {
  const clock = { now: 0 };
  // 3.3 ns a byte on the link; 1.9 of the sender's own work, 2.5 more for zstd, 0.3 left.
  const link = { streamBytesPerSecond: 300e6, waitedSeconds: 0 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  runFrames(policy, clock, link, TYPICAL, 100);
  const compressed = runFrames(policy, clock, link, TYPICAL, 1000);
  // (3.33 - 1.91) / (2.48 + 0.7 * 3.33) = 0.30
  assert(compressed > 250 && compressed < 350, `${compressed} of 1000`);
  const { cpuBytesPerSecond, share } = policy.estimate;
  assert(Math.abs(cpuBytesPerSecond - 524e6) < 10e6, `the sender's pace: ${cpuBytesPerSecond}`);
  assert(Math.abs(share - 0.3) < 0.02, `share ${share}`);
});

Deno.test("CompressionPolicy pays no time for data that does not compress, however fast zstd gives up", () => {
  const clock = { now: 0 };
  // Loopback: the stream is a little faster than the sender; random pages, which zstd passes
  // over at 1.6 GB/s: compressing every frame costs 1.2x the time and saves no byte.
  const link = { streamBytesPerSecond: 534e6, waitedSeconds: 0 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  const random = { raw: 524288, busyMs: 1.52, waitMs: 0, zstdMs: 0.33, compressed: 524288 };
  runFrames(policy, clock, link, random, 100);
  const started = clock.now;
  const compressed = runFrames(policy, clock, link, random, 500);
  const probes = Math.ceil((clock.now - started) / PROBE_INTERVAL_MS);
  assert(compressed <= probes, `${compressed} frames compressed, ${probes} probes`);
  assertEquals(policy.estimate.share, 0);
});

Deno.test("CompressionPolicy measures zstd again after contention made it look slower than the link", () => {
  const clock = { now: 0 };
  const link = { streamBytesPerSecond: 117e6, waitedSeconds: 0 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  for (let i = 0; i < 30; i++) policy.record(40960, 10000, 10); // 4 MB/s: the CPU was taken
  // Now zstd runs at 400 MB/s again, and the sender mostly waits for the link.
  const pace = { raw: 40960, busyMs: 0.1, waitMs: 9.9, zstdMs: 0.1, compressed: 10000 };
  const first = runFrames(policy, clock, link, pace, 10);
  assert(first >= 1 && first <= 2, `${first} frames compressed in the first interval: probes`);
  runFrames(policy, clock, link, pace, 80);
  assertEquals(runFrames(policy, clock, link, pace, 20), 20, "every frame compressed again");
});

Deno.test("CompressionPolicy counts only frames that shrank, and obeys zstd and none", () => {
  const policy = new CompressionPolicy("zstd", { streamBytesPerSecond: 3e9, waitedSeconds: 0 });
  assertEquals(policy.shouldCompress(4096), true);
  policy.record(4096, 4100, 0.01);
  assertEquals(policy.report.frames, 0, "a frame that did not shrink is not counted as compressed");
  policy.record(4096, 1000, 0.01);
  assertEquals(policy.report, { mode: "zstd", frames: 1, rawBytes: 4096, compressedBytes: 1000 });
  assertEquals(
    new CompressionPolicy("none", { streamBytesPerSecond: 1, waitedSeconds: 0 }).shouldCompress(
      4096,
    ),
    false,
  );
});

Deno.test("decodePages() refuses compressed data that is not n pages", () => {
  const raw = textPage(3);
  const z = new Uint8Array(compressBound(raw.length));
  const size = compress(raw, z);
  const body = new Uint8Array(4 + 16 * 2 + size); // two entries, one page of data
  new DataView(body.buffer).setUint32(0, 2, true);
  body.set(z.subarray(0, size), 4 + 32);
  assertThrows(
    () => decodePages(body, FrameFlag.Compressed),
    ProtocolError,
    "no valid zstd data of 2 pages",
  );
});
