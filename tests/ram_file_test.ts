import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertSameBytes,
  assertThrows,
} from "./_assert.ts";
import { copyPages, PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { hashPages, ramDigest, zeroPageHash } from "../src/native/hashing.ts";
import { NativeError } from "../src/native/errno.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";

Deno.test("RamFile.read() returns holes as zero pages without allocating them", async () => {
  const path = makeRamFile(shmPath("holes"), [
    patternPage(1),
    "hole",
    "hole",
    patternPage(2),
    "zero",
  ]);
  try {
    using ram = RamFile.open(path);
    const before = ram.stat().blocks;
    const buf = new Uint8Array(5 * PAGE_SIZE).fill(0xee);
    const hasData = new Uint8Array(5);
    assertEquals(ram.read(0, 5, buf, hasData), 3);
    assertEquals([...hasData], [1, 0, 0, 1, 1]);
    assertEquals(buf.subarray(0, PAGE_SIZE), patternPage(1));
    assert(buf.subarray(PAGE_SIZE, 3 * PAGE_SIZE).every((b) => b === 0));
    assertEquals(buf.subarray(3 * PAGE_SIZE, 4 * PAGE_SIZE), patternPage(2));
    assertEquals(ram.stat().blocks, before);
    assertEquals(before, 3 * (PAGE_SIZE / 512));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.read() pads a short last page with zeros", async () => {
  const path = makeRamFile(shmPath("short"), [patternPage(3), patternPage(4)], PAGE_SIZE + 100);
  try {
    using ram = RamFile.open(path);
    assertEquals(ram.size, PAGE_SIZE + 100);
    assertEquals(ram.pages, 2);
    const buf = new Uint8Array(2 * PAGE_SIZE).fill(0xee);
    ram.read(0, 2, buf, new Uint8Array(2));
    assertEquals(buf.subarray(PAGE_SIZE, PAGE_SIZE + 100), patternPage(4).subarray(0, 100));
    assert(buf.subarray(PAGE_SIZE + 100).every((b) => b === 0));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.write() writes runs in place and punch() turns pages back into holes", async () => {
  const path = makeRamFile(shmPath("write"), ["hole", "hole", "hole", "hole"]);
  try {
    using ram = RamFile.open(path, { write: true });
    const buf = new Uint8Array(3 * PAGE_SIZE);
    [5, 6, 7].forEach((seed, i) => buf.set(patternPage(seed), i * PAGE_SIZE));
    ram.write(Uint32Array.of(0, 1, 3), buf);
    assertEquals(ram.stat().blocks, 3 * (PAGE_SIZE / 512));
    ram.punch(1, 1);
    assertEquals(ram.stat().blocks, 2 * (PAGE_SIZE / 512));
    const expected = new Uint8Array(4 * PAGE_SIZE);
    expected.set(patternPage(5), 0);
    expected.set(patternPage(7), 3 * PAGE_SIZE);
    assertSameBytes(readRamFile(path), expected);
    assertThrows(() => ram.write(Uint32Array.of(4), buf), NativeError, "outside the file");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.premap() maps the pages in memory now, and no hole", async () => {
  const pages = 4096;
  // Data and holes in runs of 64 pages, half and half.
  const path = makeRamFile(
    shmPath("premap"),
    Array.from({ length: pages }, (_, p) => (p >> 6) % 2 ? "hole" as const : patternPage(p)),
  );
  const shmemKiB = () =>
    Number(/RssShmem:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
  try {
    using ram = RamFile.open(path);
    const blocks = ram.stat().blocks;
    const before = shmemKiB();
    await ram.premap();
    const mappedKiB = shmemKiB() - before;
    const dataKiB = (pages / 2) * (PAGE_SIZE / 1024);
    assert(mappedKiB >= dataKiB * 0.9, `${mappedKiB} KiB mapped now, of ${dataKiB} KiB of data`);
    assert(mappedKiB <= dataKiB * 1.1, `${mappedKiB} KiB mapped, holes included`);
    assertEquals(ram.stat().blocks, blocks, "no hole allocated");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.premap(first, count) maps only that range, and refuses one past the end", async () => {
  const pages = 2048;
  const path = makeRamFile(
    shmPath("premap-range"),
    Array.from({ length: pages }, (_, p) => patternPage(p)),
  );
  const shmemKiB = () =>
    Number(/RssShmem:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
  try {
    using ram = RamFile.open(path);
    const before = shmemKiB();
    await ram.premap(512, 1024);
    const mappedKiB = shmemKiB() - before;
    const rangeKiB = 1024 * (PAGE_SIZE / 1024);
    assert(mappedKiB >= rangeKiB * 0.9, `${mappedKiB} KiB mapped now, of ${rangeKiB} KiB asked`);
    assert(mappedKiB <= rangeKiB * 1.1, `${mappedKiB} KiB mapped, more than the ${rangeKiB} asked`);
    await assertRejects(() => ram.premap(pages - 1, 2), RangeError, "it has 2048");
    await assertRejects(() => ram.premap(-1, 1), RangeError);
    await ram.premap(pages, 0); // an empty range at the end
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.close() during a premap leaves it the C handle until it ends", async () => {
  const pages = 16_384; // 64 MiB: a premap that is still on its thread when close() comes
  const path = makeRamFile(
    shmPath("premap-close"),
    Array.from({ length: pages }, (_, p) => patternPage(p % 64)),
  );
  try {
    const ram = RamFile.open(path);
    const filling = ram.premap();
    ram.close(); // before the premap's thread even started, most likely
    assertThrows(() => ram.stat(), Error, "closed");
    await filling; // no crash, no error: it had the file to itself
    const again = RamFile.open(path);
    const second = again.premap(0, 100);
    const third = again.premap(100, 100);
    again.close();
    await Promise.all([second, third]);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.open() names the file and the reason when it cannot open it", () => {
  const missing = shmPath("missing");
  const error = assertThrows(() => RamFile.open(missing), NativeError);
  assertEquals(error.code, "ENOENT");
  assert(error.message.includes(missing), error.message);
  assertThrows(() => RamFile.open("/dev/shm"), NativeError, "is a directory");
  assertThrows(() => RamFile.open("/dev/null"), NativeError, "not a regular file");
});

Deno.test("RamFile.close() is safe twice and later use says the file is closed", async () => {
  const path = makeRamFile(shmPath("close"), [patternPage(1)]);
  try {
    const ram = RamFile.open(path);
    ram.close();
    ram.close();
    assertThrows(() => ram.stat(), Error, "closed");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("RamFile.open({ write: false }) refuses writes", async () => {
  const path = makeRamFile(shmPath("readonly"), [patternPage(1)]);
  try {
    using ram = RamFile.open(path);
    assertThrows(() => ram.punch(0, 1), NativeError, "not opened for writing");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("copyPages() copies checked pages from several files and refuses a wrong hash", async () => {
  const a = makeRamFile(shmPath("ca"), [patternPage(1), patternPage(2)]);
  const b = makeRamFile(shmPath("cb"), [patternPage(3)]);
  const t = makeRamFile(shmPath("ct"), ["hole", "hole", "hole", "hole"]);
  try {
    using ramA = RamFile.open(a);
    using ramB = RamFile.open(b);
    using target = RamFile.open(t, { write: true });
    const hash = (seed: number) => hashPages(patternPage(seed), 1, 9n).hashes[0]!;
    copyPages(target, {
      sources: [ramB, ramA, ramA],
      sourcePages: Uint32Array.of(0, 0, 1),
      targetPages: Uint32Array.of(0, 2, 3),
      hashes: BigUint64Array.of(hash(3), hash(1), hash(2)),
    }, 9n);
    const expected = new Uint8Array(4 * PAGE_SIZE);
    expected.set(patternPage(3), 0);
    expected.set(patternPage(1), 2 * PAGE_SIZE);
    expected.set(patternPage(2), 3 * PAGE_SIZE);
    assertSameBytes(readRamFile(t), expected);
    assertThrows(
      () =>
        copyPages(target, {
          sources: [ramA],
          sourcePages: Uint32Array.of(1),
          targetPages: Uint32Array.of(1),
          hashes: BigUint64Array.of(hash(1)),
        }, 9n),
      Error,
      `page 1 of "${a}": it does not match its content's hash`,
    );
    assertThrows(
      () =>
        copyPages(target, {
          sources: [ramB],
          sourcePages: Uint32Array.of(1),
          targetPages: Uint32Array.of(0),
          hashes: BigUint64Array.of(hash(3)),
        }, 9n),
      NativeError,
      "outside the file",
    );
  } finally {
    await removeFiles(a, b, t);
  }
});

Deno.test("copyPages() names a source whose RAM file shrank instead of dying of SIGBUS", async () => {
  const a = makeRamFile(shmPath("sa"), [patternPage(1), patternPage(2)]);
  const t = makeRamFile(shmPath("st"), ["hole", "hole"]);
  try {
    using ramA = RamFile.open(a);
    using target = RamFile.open(t, { write: true });
    const copies = {
      sources: [ramA],
      sourcePages: Uint32Array.of(1),
      targetPages: Uint32Array.of(0),
      hashes: hashPages(patternPage(2), 1, 9n).hashes,
    };
    copyPages(target, copies, 9n);
    RamFile.open(a, { write: true }).resize(PAGE_SIZE);
    const error = assertThrows(() => copyPages(target, copies, 9n), NativeError);
    assertEquals(
      error.message,
      `Cannot read guest RAM "${a}": the file shrank from ${2 * PAGE_SIZE} to ${PAGE_SIZE} bytes`,
    );
  } finally {
    await removeFiles(a, t);
  }
});

Deno.test("hashPages() flags zero pages and keys hashes by the seed", () => {
  const buf = new Uint8Array(3 * PAGE_SIZE);
  buf.set(patternPage(9), 0);
  buf.set(patternPage(9), 2 * PAGE_SIZE);
  const { hashes, zero } = hashPages(buf, 3, 1n);
  assertEquals([...zero], [0, 1, 0]);
  assertEquals(hashes[0], hashes[2]);
  assertNotEquals(hashes[0], hashes[1]);
  assertEquals(hashes[1], zeroPageHash(1n));
  assertNotEquals(hashPages(buf, 1, 2n).hashes[0], hashes[0]);
  buf[PAGE_SIZE + 4095] = 1; // a single byte at the very end makes a page non-zero
  assertEquals([...hashPages(buf, 3, 1n).zero], [0, 0, 0]);
});

Deno.test("ramDigest() depends on every page hash and on the seed", () => {
  const hashes = BigUint64Array.of(1n, 2n, 3n);
  const digest = ramDigest(hashes, 0n);
  assertEquals(digest.length, 32);
  assertEquals(ramDigest(BigUint64Array.of(1n, 2n, 3n), 0n), digest);
  assertNotEquals(ramDigest(BigUint64Array.of(1n, 2n, 4n), 0n), digest);
  assertNotEquals(ramDigest(BigUint64Array.of(2n, 1n, 3n), 0n), digest);
  assertNotEquals(ramDigest(hashes, 1n), digest);
});

Deno.test("RamFile.open({ createNew }) creates a file, and finds anything at the path without following it", async () => {
  const path = shmPath("new");
  const dangling = shmPath("dangling");
  const target = shmPath("link-target");
  try {
    using made = RamFile.open(path, { createNew: true });
    assertEquals(made.stat().mode, 0o100600, "a regular file only its user may read and write");
    made.close();
    const there = assertThrows(() => RamFile.open(path, { createNew: true }), NativeError);
    assertEquals(there.code, "EEXIST");
    Deno.symlinkSync(target, dangling);
    const link = assertThrows(() => RamFile.open(dangling, { createNew: true }), NativeError);
    assertEquals(link.code, "EEXIST");
    assertEquals(await Deno.lstat(target).catch(() => "missing"), "missing", "nothing made there");
  } finally {
    await removeFiles(path, dangling, target);
  }
});
