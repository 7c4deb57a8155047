/**
 * Similar pages sent as differences (DELTAS): the native features and
 * differences, and migrations that use them, or must not.
 */
import { assert, assertEquals, assertSameBytes } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { transferGang } from "../src/transfer/transfer_gang.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { hashPages } from "../src/native/hashing.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import {
  chunkFeatures,
  fileDelta,
  NOT_A_BASE,
  PAGE_FEATURES,
  undoFileDeltas,
} from "../src/native/similarity.ts";
import { PageKind } from "../src/native/content_index.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";

/**
 * `page` as KASLR would relocate it: every pointer-like word of its first
 * 512 bytes and of a few places further on moved by `offset` (the sampled
 * blocks past the first 512 bytes stay as they were).
 */
function relocated(page: Uint8Array, offset: bigint): Uint8Array {
  const out = page.slice();
  const words = new BigUint64Array(out.buffer);
  for (const i of [0, 3, 7, 9, 12, 20, 33, 60, 100, 101, 250, 251, 400]) {
    words[i] = BigInt.asUintN(64, words[i]! + offset);
  }
  return out;
}

Deno.test("page features: zero blocks have none, similar pages share some, other pages none", () => {
  const page = patternPage(1);
  // A chunk: the page, a relocated copy, another page, a zero page; last, a page the scan did not keep.
  const chunk = concat([
    page,
    relocated(page, 0x200000n),
    patternPage(2),
    new Uint8Array(PAGE_SIZE),
    patternPage(3),
  ]);
  const { New, Duplicate, Unchanged } = PageKind;
  const kinds = Uint8Array.of(New, New, Duplicate, New, Unchanged);
  const features = new Uint32Array(5 * PAGE_FEATURES).fill(7);
  chunkFeatures(chunk, kinds, 5, [New, Duplicate], features);
  const [mine, similar, other, zero, notKept] = [0, 1, 2, 3, 4].map((i) =>
    Array.from(features.subarray(i * PAGE_FEATURES, (i + 1) * PAGE_FEATURES))
  );
  assert(mine!.every((f) => f !== 0), "a page of random words has every feature");
  assert(mine!.some((f, k) => f === similar![k]), "a relocated page shares a feature");
  assert(mine!.every((f, k) => f !== other![k]), "another page shares none");
  assertEquals(zero, [0, 0, 0, 0]);
  assertEquals(notKept, [0, 0, 0, 0], "a page of a kind not asked for has none");
});

Deno.test("page features: a page whose every sampled block holds kernel addresses that KASLR moved still shares them", () => {
  // Kernel addresses in every word of the page (a table of pointers); KASLR moves them by a multiple of 2 MiB.
  const page = new Uint8Array(PAGE_SIZE);
  const words = new BigUint64Array(page.buffer);
  for (let i = 0; i < words.length; i++) words[i] = 0xffffffff81000000n + BigInt(i * 4168);
  const moved = (offset: bigint) => {
    const out = page.slice();
    const w = new BigUint64Array(out.buffer);
    for (let i = 0; i < w.length; i++) w[i] = BigInt.asUintN(64, w[i]! + offset);
    return out;
  };
  // The same table moved by 38 MiB, then by an offset that is no multiple of 2 MiB (no KASLR).
  const chunk = concat([page, moved(38n << 20n), moved(0x1000n)]);
  const { New } = PageKind;
  const features = new Uint32Array(3 * PAGE_FEATURES);
  chunkFeatures(chunk, Uint8Array.of(New, New, New), 3, [New], features);
  const [mine, kaslr, other] = [0, 1, 2].map((i) =>
    Array.from(features.subarray(i * PAGE_FEATURES, (i + 1) * PAGE_FEATURES))
  );
  assertEquals(kaslr, mine, "moved by KASLR: every feature shared");
  assert(mine!.every((f, k) => f !== other![k]), "moved within 2 MiB: none shared");
});

Deno.test("fileDelta() turns a page into its difference from a file's page, only if that still hashes to its content; undoFileDeltas() back", () => {
  const base = patternPage(5);
  const path = makeRamFile(shmPath("delta-base"), [base, "hole"]);
  try {
    using file = RamFile.open(path);
    const hash = hashPages(base, 1, 9n).hashes[0]!;
    const page = relocated(base, 0x1234000n);
    const before = page.slice();
    assertEquals(fileDelta(page, file, 0, 9n, hash + 1n, 256), NOT_A_BASE, "other bytes");
    assertEquals(fileDelta(page, file, 1, 9n, hash, 256), NOT_A_BASE, "a hole");
    assertEquals(fileDelta(page, file, 2, 9n, hash, 256), NOT_A_BASE, "past the end");
    assertEquals(
      fileDelta(page, file, 0, 9n, hash, 12),
      13,
      "more words differ than allowed: counted",
    );
    assertSameBytes(page, before, "untouched by a refused base");
    assertEquals(fileDelta(page, file, 0, 9n, hash, 256), 13);
    const words = new BigUint64Array(page.buffer);
    assertEquals(words.filter((w) => w !== 0n).length, 13);
    assertEquals(words[0], 0x1234000n, "a moved pointer differs by the offset");
    const one = (basePage: number) => ({
      files: [file],
      pages: Uint32Array.of(basePage),
      slots: Uint32Array.of(0),
    });
    const difference = page.slice();
    assertEquals(undoFileDeltas(difference, one(2)), 0, "past the end: not a base");
    assertSameBytes(difference, page, "untouched");
    assertEquals(undoFileDeltas(page, one(0)), -1); // the receiver's way: the base from its file
    assertSameBytes(page, before, "rebuilt");
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("undoFileDeltas() rebuilds a frame's differences from bases in runs and in other files, and names a base that cannot be one", async () => {
  // Bases: pages 0-19 of one file (runs longer than one read), page 2 of another, whose last
  // page is short.
  const bases = Array.from({ length: 20 }, (_, i) => patternPage(300 + i));
  const other = [patternPage(400), patternPage(401), patternPage(402)];
  const a = makeRamFile(shmPath("undelta-a"), bases);
  const b = makeRamFile(shmPath("undelta-b"), other);
  try {
    using fileA = RamFile.open(a);
    using fileB = RamFile.open(b, { write: true });
    // A frame of 24 pages: slot 23 a whole page, the others differences, in the frame's order.
    const pages = [...bases.map((p) => relocated(p, 0x2000000n)), relocated(other[2]!, 1n)];
    const data = new Uint8Array(24 * PAGE_SIZE);
    const order = [...Array(20).keys(), 20]; // slots 0-20: bases 0-19 of A, then B's page 2
    order.forEach((_, slot) => data.set(pages[slot]!, slot * PAGE_SIZE));
    data.set(patternPage(500), 23 * PAGE_SIZE);
    const want = data.slice();
    for (let slot = 0; slot < 21; slot++) {
      const base = slot < 20 ? bases[slot]! : other[2]!;
      const d = new BigUint64Array(data.buffer, slot * PAGE_SIZE, PAGE_SIZE / 8);
      const w = new BigUint64Array(base.buffer);
      for (let k = 0; k < d.length; k++) d[k] = BigInt.asUintN(64, d[k]! - w[k]!);
    }
    const files = [...Array(20).fill(fileA), fileB];
    const deltas = {
      files,
      pages: Uint32Array.from([...Array(20).keys(), 2]),
      slots: Uint32Array.from(order),
    };
    assertEquals(undoFileDeltas(data, deltas), -1);
    assertSameBytes(data, want, "every page rebuilt, the whole page untouched");
    // B's last page made short: that difference is named, and not undone.
    fileB.resize(2 * PAGE_SIZE + 100);
    const again = want.slice();
    assertEquals(undoFileDeltas(again, deltas), 20);
    assertSameBytes(again.subarray(20 * PAGE_SIZE), want.subarray(20 * PAGE_SIZE), "not undone");
  } finally {
    await removeFiles(a, b);
  }
});

const specs = (paths: string[]) => paths.map((path, i) => ({ name: `g${i}`, path }));

function assertSameFiles(paths: string[], dir: string): void {
  paths.forEach((path, i) =>
    assertSameBytes(readRamFile(`${dir}/g${i}`), readRamFile(path), `g${i}`)
  );
}

Deno.test("transferGang() sends a guest's relocated copies of another guest's pages as deltas", async () => {
  const pages = Array.from({ length: 64 }, (_, i) => patternPage(100 + i));
  const paths = [
    makeRamFile(shmPath("kernel-a"), pages),
    makeRamFile(shmPath("kernel-b"), pages.map((p) => relocated(p, 0x4000000n))),
  ];
  await using receiver = await startReceiver();
  try {
    const bytes: Record<string, number> = {};
    for (const deltas of [true, false]) {
      using gang = Gang.open(specs(paths), { seed: randomSeed() });
      const report = await transferGang(gang, await receiver.connect(), {
        compression: "zstd",
        deltas,
      });
      assert(report.verified);
      assertSameFiles(paths, receiver.dir);
      assertEquals(report.rounds[0]!.deltas, deltas ? 64 : 0);
      assertEquals(report.compression.deltaPages, deltas ? 64 : 0);
      bytes[String(deltas)] = report.bytesOnWire;
      for (let i = 0; i < paths.length; i++) Deno.removeSync(`${receiver.dir}/g${i}`);
    }
    // Random pages do not compress: without deltas both guests go whole.
    assert(bytes["true"]! < 0.6 * bytes["false"]!, JSON.stringify(bytes));
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("no delta is made from a page the source changed after sending it (the target holds the old bytes)", async () => {
  const old = Array.from({ length: 16 }, (_, i) => patternPage(200 + i));
  for (const changeBase of [true, false]) {
    // Guest 1's pages are sent in round 1; in round 2 guest 0 (planned first) gets relocated
    // copies of them, while guest 1's pages change or not.
    const paths = [
      makeRamFile(shmPath("later"), old.map(() => "hole" as const)),
      makeRamFile(shmPath("base"), old),
    ];
    await using receiver = await startReceiver();
    try {
      using gang = Gang.open(specs(paths), { seed: randomSeed() });
      await using sender = await GangSender.connect(gang, await receiver.connect(), {
        compression: "zstd",
      });
      await sender.prepare();
      await sender.round();
      {
        using later = RamFile.open(paths[0]!, { write: true });
        later.write(Uint32Array.from(old, (_, i) => i), concat(old.map((p) => relocated(p, 8n))));
        using base = RamFile.open(paths[1]!, { write: true });
        if (changeBase) {
          base.write(
            Uint32Array.from(old, (_, i) => i),
            // One word changed: still similar, so only the hash tells it is not what was sent.
            concat(old.map((p) => relocated(p, 1n).map((b, at) => at === 4000 ? b ^ 1 : b))),
          );
        }
      }
      const round2 = await sender.round({ final: true });
      await sender.verify();
      assertSameFiles(paths, receiver.dir);
      // Guest 0's pages go as deltas from guest 1's as sent only when those are unchanged: a
      // delta from their new bytes would not rebuild at the target (the verification above, or
      // "corrupted in transit"). Changed, guest 1's pages go as deltas from guest 0's new ones.
      assertEquals(round2.deltas, 16);
    } finally {
      await removeFiles(...paths);
    }
  }
});

function concat(pages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pages.length * PAGE_SIZE);
  pages.forEach((p, i) => out.set(p, i * PAGE_SIZE));
  return out;
}
