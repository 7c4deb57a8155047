import { assert, assertEquals, assertSameBytes, assertThrows } from "./_assert.ts";
import {
  ContentId,
  ContentIndex,
  type PageBytes,
  PageKind,
  scanBuffers,
} from "../src/native/content_index.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";

/** Scans a whole small guest in one call and returns kinds and ids. */
function scanAll(index: ContentIndex, guest: number, pages: number) {
  const out = scanBuffers(pages);
  index.scan(guest, 0, pages, out);
  return { kinds: [...out.kinds.subarray(0, pages)], ids: [...out.ids.subarray(0, pages)] };
}

/** Overwrites pages of a fixture file in place. */
function writePages(path: string, pages: Record<number, Uint8Array | "zero">) {
  using ram = RamFile.open(path, { write: true });
  for (const [page, spec] of Object.entries(pages)) {
    if (spec === "zero") ram.punch(Number(page), 1);
    else ram.write(Uint32Array.of(Number(page)), spec);
  }
}

const { Zero, New, Duplicate, Unchanged } = PageKind;

Deno.test("ContentIndex.scan() classifies zero, new and duplicate pages across guests", async () => {
  const a = makeRamFile(shmPath("a"), [patternPage(1), "hole", patternPage(2), patternPage(1)]);
  const b = makeRamFile(shmPath("b"), [patternPage(2), "zero", patternPage(3)]);
  try {
    using ramA = RamFile.open(a);
    using ramB = RamFile.open(b);
    using index = ContentIndex.create({ seed: 7n });
    assertEquals(index.addGuest(ramA), 0);
    assertEquals(index.addGuest(ramB), 1);
    assertEquals(scanAll(index, 0, 4), {
      kinds: [New, Zero, New, Duplicate],
      ids: [0, ContentId.Zero, 1, 0],
    });
    assertEquals(scanAll(index, 1, 3), {
      kinds: [Duplicate, Zero, New],
      ids: [1, ContentId.Zero, 2],
    });
    assertEquals(index.contents, 3);
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("ContentIndex keeps colliding hashes apart by comparing bytes", async () => {
  // With 1-bit hashes nearly every page collides with another: only the byte compare separates them.
  const distinct = 64;
  const pages = Array.from({ length: distinct * 2 }, (_, i) => patternPage(i % distinct));
  const path = makeRamFile(shmPath("collide"), pages);
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create({ hashBits: 1 });
    index.addGuest(ram);
    const { kinds, ids } = scanAll(index, 0, pages.length);
    assertEquals(index.contents, distinct);
    assertEquals(kinds.slice(0, distinct), Array(distinct).fill(New));
    assertEquals(kinds.slice(distinct), Array(distinct).fill(Duplicate));
    assertEquals(ids.slice(distinct), ids.slice(0, distinct));
    assertEquals(new Set(ids).size, distinct);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex confirms against kept copies as against holders: collisions apart, evicted copies read again", async () => {
  // 2,100 contents, each three times, with 12-bit hashes: the second copies are confirmed by
  // reading the holder, the third against the bytes kept then, which fill 1,024 slots (the
  // fewest), so that some were evicted by later contents and are read again. Many contents share
  // a hash: a kept copy of another content must never pass for this one.
  const distinct = 2100;
  const contents = Array.from({ length: distinct }, (_, i) => patternPage(1000 + i));
  const path = makeRamFile(shmPath("kept"), [...contents, ...contents, ...contents]);
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create({ hashBits: 12 });
    index.addGuest(ram);
    const { kinds, ids } = scanAll(index, 0, distinct * 3);
    assertEquals(index.contents, distinct);
    assertEquals(kinds.slice(distinct), Array(distinct * 2).fill(Duplicate));
    assertEquals(ids.slice(distinct, distinct * 2), ids.slice(0, distinct));
    assertEquals(ids.slice(distinct * 2), ids.slice(0, distinct));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex compares a later copy with the kept bytes, not with a holder that changed since", async () => {
  // Page 1 is confirmed against page 0, whose bytes are then kept. Page 0 changes (the target
  // still holds x there: it was sent so) and, before page 0 is scanned again, page 2 becomes x:
  // a duplicate of the content (the holder's bytes now would have made it a new one), and with
  // the size of a gang of 100 MiB: 1,600 slots, no whole number of the 2 MiB pages they are on.
  const x = patternPage(40);
  const path = makeRamFile(
    shmPath("kept"),
    [x, x, patternPage(41)],
    1600 * 16 * PAGE_SIZE,
  );
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    index.addGuest(ram);
    const before = scanAll(index, 0, 3);
    assertEquals(before.kinds, [New, Duplicate, New]);
    writePages(path, { 0: patternPage(42), 2: x });
    const out = scanBuffers(1);
    index.scan(0, 2, 1, out);
    assertEquals([out.kinds[0], out.ids[0]], [Duplicate, before.ids[0]]);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex re-scan reports exactly the pages whose content changed", async () => {
  const path = makeRamFile(shmPath("rescan"), [
    patternPage(1),
    patternPage(2),
    "zero",
    patternPage(3),
    patternPage(4),
    "hole",
  ]);
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    index.addGuest(ram);
    scanAll(index, 0, 6);
    writePages(path, { 1: patternPage(9), 2: patternPage(1), 3: patternPage(3), 4: "zero" });
    const { kinds, ids } = scanAll(index, 0, 6);
    // Page 3 was rewritten with the same bytes: unchanged. Page 2 now duplicates page 0.
    assertEquals(kinds, [Unchanged, New, Duplicate, Unchanged, Zero, Unchanged]);
    assertEquals(ids[2], ids[0]);
    assertEquals(ids[5], ContentId.Zero);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex.scan() on several threads, and reading in place, finds what one thread finds, page bytes included", async () => {
  const pages = 700; // enough pages for the page work to be split
  const paths = [0, 1].map((g) => shmPath(`threads${g}`));
  /** Makes both guests, scans them twice (then again after writes) on `threads` threads. */
  const scanTwice = (threads: number, pageBytes: PageBytes = "all") => {
    paths.forEach((path, g) =>
      makeRamFile(
        path,
        Array.from({ length: pages }, (_, p) => {
          if (p % 7 === 0) return "hole" as const;
          if (p % 7 === 1) return "zero" as const;
          if (p % 7 === 2) return patternPage(1000 + (p % 11)); // shared within and across
          return patternPage(g * 10_000 + p);
        }),
      )
    );
    using a = RamFile.open(paths[0]!);
    using b = RamFile.open(paths[1]!);
    using index = ContentIndex.create({ seed: 42n });
    index.addGuest(a);
    index.addGuest(b);
    const scans = [];
    const sent: Uint8Array[] = [];
    for (const again of [false, true]) {
      if (again) {
        writePages(paths[1]!, { 3: patternPage(1001), 4: patternPage(77_777), 5: "zero" });
      }
      for (const guest of [0, 1]) {
        const out = scanBuffers(pages);
        assertEquals(index.scan(guest, 0, pages, out, { threads, bytes: pageBytes }), pages);
        out.kinds.forEach((kind, i) => {
          if (kind === New || kind === Duplicate) {
            sent.push(out.buf.slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
          }
        });
        scans.push({ kinds: [...out.kinds], ids: [...out.ids], stats: [...out.stats] });
      }
    }
    const bytes = new Uint8Array(sent.length * PAGE_SIZE);
    sent.forEach((page, i) => bytes.set(page, i * PAGE_SIZE));
    const blocks = a.stat().blocks + b.stat().blocks;
    return { scans, hashes: [...index.pageHashes(0), ...index.pageHashes(1)], sent: bytes, blocks };
  };
  try {
    const one = scanTwice(1);
    assertEquals(
      one.scans[3]!.kinds.slice(3, 6),
      [Duplicate, New, Zero],
      "the re-scan saw the writes",
    );
    const ways = [[4, "all"], [1, "changed"], [4, "changed"], [1, "none"], [4, "none"]] as const;
    for (const [threads, bytes] of ways) {
      const other = scanTwice(threads, bytes);
      const how = `${threads} threads, bytes "${bytes}"`;
      assertEquals(other.scans, one.scans, how);
      assertEquals(other.hashes, one.hashes, how);
      // "none" leaves no page's bytes: what it saw is in its kinds, ids and hashes.
      if (bytes !== "none") {
        assertSameBytes(other.sent, one.sent, `the page bytes for the sender, ${how}`);
      }
      assertEquals(other.blocks, one.blocks, `no hole allocated, ${how}`);
    }
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("ContentIndex moves a content to another copy when its first copy changes", async () => {
  const x = patternPage(10);
  const a = makeRamFile(shmPath("holder-a"), [x]);
  const b = makeRamFile(shmPath("holder-b"), [x, patternPage(11)]);
  try {
    using ramA = RamFile.open(a);
    using ramB = RamFile.open(b);
    using index = ContentIndex.create();
    index.addGuest(ramA);
    index.addGuest(ramB);
    const xId = scanAll(index, 0, 1).ids[0];
    assertEquals(scanAll(index, 1, 2).ids[0], xId);

    writePages(a, { 0: patternPage(12) }); // the first copy of x is gone
    assertEquals(scanAll(index, 0, 1).kinds, [New]);
    writePages(b, { 1: x }); // a new copy of x appears after b's unchanged copy
    const rescan = scanAll(index, 1, 2);
    assertEquals(rescan.kinds, [Unchanged, Duplicate]);
    assertEquals(rescan.ids, [xId, xId]);
    assertEquals(index.contents, 3);
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("ContentIndex never matches a content whose only copy changed", async () => {
  const x = patternPage(20);
  const path = makeRamFile(shmPath("stale"), [x, patternPage(21)]);
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    index.addGuest(ram);
    const before = scanAll(index, 0, 2);
    writePages(path, { 0: patternPage(22), 1: x }); // x moved from page 0 to page 1
    const after = scanAll(index, 0, 2);
    assertEquals(after.kinds, [New, New]);
    assert(after.ids[1] !== before.ids[0], "x must be a new content: its old copy is gone");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex uses at most 24 bytes per distinct content", async () => {
  const count = 20_000;
  const path = shmPath("memory");
  {
    using ram = RamFile.open(path, { create: true });
    ram.resize(count * PAGE_SIZE);
    const buf = new Uint8Array(1024 * PAGE_SIZE);
    const pages = new Uint32Array(1024);
    for (let first = 0; first < count; first += 1024) {
      const n = Math.min(1024, count - first);
      for (let i = 0; i < n; i++) {
        buf.set(patternPage(first + i), i * PAGE_SIZE);
        pages[i] = first + i;
      }
      ram.write(pages.subarray(0, n), buf);
    }
  }
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    index.addGuest(ram);
    const out = scanBuffers(1024);
    for (let first = 0; first < count; first += 1024) {
      index.scan(0, first, Math.min(1024, count - first), out);
    }
    assertEquals(index.contents, count);
    const perContent = index.memoryBytes / count;
    assert(perContent <= 24, `${perContent.toFixed(1)} bytes per content`);
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex.scan() skips masked pages and checks its arguments", async () => {
  const path = makeRamFile(shmPath("mask"), [patternPage(1), patternPage(2), patternPage(3)]);
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    index.addGuest(ram);
    const out = scanBuffers(3);
    assertEquals(index.scan(0, 0, 3, out, { mask: Uint8Array.of(1, 0, 1) }), 2);
    assertEquals([...out.kinds], [New, PageKind.Skipped, New]);
    assertEquals([...index.pageContents(0)], [0, ContentId.None, 1]);
    assertThrows(() => index.scan(0, 2, 2, out), Error, "outside the file");
    assertThrows(() => index.scan(1, 0, 1, out), RangeError, "No guest 1");
  } finally {
    await removeFiles(path);
  }
});

Deno.test("ContentIndex's per-guest arrays are one live view each, made once, and refused once closed", async () => {
  const a = makeRamFile(shmPath("views-a"), [patternPage(1), patternPage(2)]);
  const b = makeRamFile(shmPath("views-b"), [patternPage(2)]);
  try {
    using ramA = RamFile.open(a);
    using ramB = RamFile.open(b);
    const index = ContentIndex.create({ seed: 3n });
    index.addGuest(ramA);
    const hashes = index.pageHashes(0);
    const contents = index.pageContents(0);
    // A view a call made V8 count the whole array as new memory each time (GC for large guests).
    assert(index.pageHashes(0) === hashes, "pageHashes() made a new view");
    assert(index.pageContents(0) === contents, "pageContents() made a new view");
    index.addGuest(ramB); // another guest does not move the first one's arrays
    scanAll(index, 0, 2);
    assertEquals([...contents], [0, 1]);
    assert(hashes[0] !== 0n && hashes[0] !== hashes[1], "the view does not show the scan's hashes");
    assertEquals(index.pageHashes(1).length, 1);
    index.close();
    assertThrows(() => index.pageHashes(0));
    assertThrows(() => index.pageContents(1));
  } finally {
    await removeFiles(a, b);
  }
});

/** Shared memory this process maps now (KiB): pages read through a mapping of a /dev/shm file count. */
function shmemKiB(): number {
  return Number(/RssShmem:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
}

Deno.test('ContentIndex.scan() with bytes "none" reads a page\'s first time with pread, and later ones where they lie', async () => {
  const pages = 1024;
  const path = makeRamFile(
    shmPath("none-first"),
    Array.from({ length: pages }, (_, p) => patternPage(p)),
  );
  try {
    using ram = RamFile.open(path);
    using index = ContentIndex.create();
    const guest = index.addGuest(ram);
    const out = scanBuffers(pages);
    const dataKiB = (pages * PAGE_SIZE) / 1024;
    let before = shmemKiB();
    assertEquals(index.scan(guest, 0, pages, out, { bytes: "none" }), pages);
    const firstKiB = shmemKiB() - before;
    assert(
      firstKiB <= dataKiB * 0.1,
      `the first scan mapped ${firstKiB} KiB of ${dataKiB} KiB of pages`,
    );
    assert(out.kinds.every((kind) => kind === New), "every page is new");
    before = shmemKiB();
    assertEquals(index.scan(guest, 0, pages, out, { bytes: "none" }), pages);
    const againKiB = shmemKiB() - before;
    assert(
      againKiB >= dataKiB * 0.9,
      `the rescan mapped only ${againKiB} KiB of ${dataKiB} KiB of pages`,
    );
    assert(out.kinds.every((kind) => kind === Unchanged), "every page is unchanged");
  } finally {
    await removeFiles(path);
  }
});

Deno.test('ContentIndex.scan() with bytes "none" after partial scans finds what a scan that copies finds', async () => {
  const pages = 3 * 256 + 40; // blocks of the page work whose first pages were scanned or not
  const path = makeRamFile(
    shmPath("none-mixed"),
    Array.from({ length: pages }, (_, p) => {
      if (p % 9 === 0) return "hole" as const;
      if (p % 9 === 1) return "zero" as const;
      if (p % 9 === 2) return patternPage(500 + (p % 13)); // duplicates
      return patternPage(p);
    }),
  );
  try {
    using ram = RamFile.open(path);
    // Partial scans before the whole one: the call's first page scanned or not, blocks of either.
    const partials = [[[0, 100], [300, 300]], [[300, 300]], [[256, 1], [600, 100]], []] as const;
    for (const before of partials) {
      const results = (["all", "none"] as const).map((bytes) => {
        using index = ContentIndex.create({ seed: 3n });
        index.addGuest(ram);
        const out = scanBuffers(pages);
        for (const [first, count] of before) index.scan(0, first, count, out, { bytes });
        assertEquals(index.scan(0, 0, pages, out, { bytes }), pages);
        return {
          kinds: [...out.kinds.subarray(0, pages)],
          ids: [...out.ids.subarray(0, pages)],
          hashes: [...index.pageHashes(0)],
          contents: index.contents,
        };
      });
      assertEquals(results[1], results[0], `after scans of ${JSON.stringify(before)}`);
    }
  } finally {
    await removeFiles(path);
  }
});
