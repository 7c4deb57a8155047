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

Deno.test("CompressionPolicy compresses in auto mode when zstd outruns the stream", () => {
  const link = { streamBytesPerSecond: 0, waitingShare: 0 };
  const policy = new CompressionPolicy("auto", link, () => 0); // a clock that stands still
  assertEquals(policy.shouldCompress(), true, "nothing measured yet: links are usually slower");
  link.streamBytesPerSecond = 117e6; // a Gigabit link
  assertEquals(policy.shouldCompress(), true);
  link.streamBytesPerSecond = 3e9; // loopback
  assertEquals(policy.shouldCompress(), false);
  link.streamBytesPerSecond = 117e6;
  for (let i = 0; i < 30; i++) policy.record(4096, 1000, 1); // zstd at 4 MB/s: slower than the link
  assertEquals(policy.shouldCompress(), false);
  for (let i = 0; i < 30; i++) policy.record(40960, 10000, 0.1); // 400 MB/s again
  assertEquals(policy.shouldCompress(), true);
});

/** Calls shouldCompress() every 10 ms of a fake clock for `ms`; returns the answers. */
function answersOver(ms: number, clock: { now: number }, policy: CompressionPolicy): boolean[] {
  const answers = [];
  for (let t = 0; t < ms; t += 10) {
    clock.now += 10;
    answers.push(policy.shouldCompress());
  }
  return answers;
}

Deno.test("CompressionPolicy tries a frame every PROBE_INTERVAL_MS of data that does not shrink while the sender's CPU sets the pace", () => {
  const clock = { now: 0 };
  const link = { streamBytesPerSecond: 500e6, waitingShare: 0.1 };
  const policy = new CompressionPolicy("auto", link, () => clock.now);
  policy.record(40960, 40960, 0.01); // random pages: zstd at about 1 GB/s, no gain
  const answers = answersOver(2 * PROBE_INTERVAL_MS, clock, policy);
  assertEquals(answers.filter(Boolean).length, 2, "two probes in two intervals");
  for (let i = 0; i < 10; i++) policy.record(40960, 8000, 0.02); // the probes find text again
  assertEquals(policy.shouldCompress(), true);
  link.waitingShare = 0.9; // the sender waits for the link: even random pages are tried
  for (let i = 0; i < 10; i++) policy.record(40960, 40960, 0.01);
  assert(answersOver(PROBE_INTERVAL_MS, clock, policy).every(Boolean));
});

Deno.test("CompressionPolicy measures zstd again after contention made it look slower than the link", () => {
  const clock = { now: 0 };
  const policy = new CompressionPolicy(
    "auto",
    { streamBytesPerSecond: 117e6, waitingShare: 0.9 },
    () => clock.now,
  );
  for (let i = 0; i < 30; i++) policy.record(40960, 10000, 10); // 4 MB/s: the CPU was taken
  assertEquals(policy.shouldCompress(), false);
  let probes = 0;
  while (!policy.shouldCompress()) {
    clock.now += 10;
    if (policy.shouldCompress()) {
      probes++;
      policy.record(40960, 10000, 0.1); // the probe finds zstd at 400 MB/s again
    }
    assert(clock.now < 10 * PROBE_INTERVAL_MS, "compression never came back");
  }
  assert(probes >= 1 && probes <= 3, `${probes} probes`);
});

Deno.test("CompressionPolicy counts only frames that shrank, and obeys zstd and none", () => {
  const policy = new CompressionPolicy("zstd", { streamBytesPerSecond: 3e9, waitingShare: 0 });
  assertEquals(policy.shouldCompress(), true);
  policy.record(4096, 4100, 0.01);
  assertEquals(policy.report.frames, 0, "a frame that did not shrink is not counted as compressed");
  policy.record(4096, 1000, 0.01);
  assertEquals(policy.report, { mode: "zstd", frames: 1, rawBytes: 4096, compressedBytes: 1000 });
  assertEquals(
    new CompressionPolicy("none", { streamBytesPerSecond: 1, waitingShare: 0 }).shouldCompress(),
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
