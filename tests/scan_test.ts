import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { rescanGuest, scanGang } from "../src/scan/scan_gang.ts";
import { scanChunks } from "../src/scan/scan_chunks.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { NativeError } from "../src/native/errno.ts";
import { totalMemory } from "../src/native/memory.ts";
import {
  type FirstReads,
  MAX_SCAN_THREADS,
  type PageBytes,
  PageKind,
  type ScanBuffers,
  scanBuffers,
} from "../src/native/content_index.ts";
import { makeRamFile, patternPage, removeFiles, shmPath } from "./_fixtures.ts";

const [p1, p2, p3, p4] = [1, 2, 3, 4].map(patternPage) as [
  Uint8Array,
  Uint8Array,
  Uint8Array,
  Uint8Array,
];

/** `read` fails with ESTALE, naming `path`, a guest RAM file of two pages cut to none. */
function assertNamesEmptied(read: () => unknown, path: string): void {
  const error = assertThrows(read, NativeError);
  assertEquals(
    error.message,
    `Cannot read guest RAM "${path}": the file shrank from ${2 * PAGE_SIZE} to 0 bytes`,
  );
  assertEquals(error.code, "ESTALE");
}

/** Three guests of known structure: holes, zero pages, a short last page, shared pages. */
function makeGang() {
  const a = makeRamFile(shmPath("a"), [p1, "hole", "zero", p2, p1, p3]);
  const b = makeRamFile(shmPath("b"), [p2, p4, "hole", p4, p1]);
  // c: 2 pages, the last one short (100 bytes of p3, then the zero padding): a content of its own.
  const c = makeRamFile(shmPath("c"), [p3, p3], PAGE_SIZE + 100);
  return [a, b, c];
}

Deno.test("scanGang() counts zero, unique and duplicate pages within and across guests", async () => {
  const paths = makeGang();
  try {
    using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })));
    const report = scanGang(gang);
    const counts = report.guests.map((
      { pages, zero, unique, duplicate, duplicateWithin, duplicateAcross },
    ) => ({
      pages,
      zero,
      unique,
      duplicate,
      duplicateWithin,
      duplicateAcross,
    }));
    assertEquals(counts, [
      { pages: 6, zero: 2, unique: 3, duplicate: 1, duplicateWithin: 1, duplicateAcross: 0 },
      { pages: 5, zero: 1, unique: 1, duplicate: 3, duplicateWithin: 1, duplicateAcross: 2 },
      { pages: 2, zero: 0, unique: 1, duplicate: 1, duplicateWithin: 0, duplicateAcross: 1 },
    ]);
    assertEquals(report.totals, {
      pages: 13,
      zero: 3,
      unique: 5,
      duplicate: 5,
      duplicateWithin: 2,
      duplicateAcross: 3,
      bytes: 11 * PAGE_SIZE + PAGE_SIZE + 100,
      uniqueBytes: 5 * PAGE_SIZE,
    });
    assertEquals(report.pageSize, PAGE_SIZE);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("scanGang() refuses threads that are not a positive integer, and reports the threads it ran", async () => {
  const paths = makeGang();
  try {
    using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })));
    for (const threads of [0, 1.5, -1, NaN]) {
      assertThrows(() => scanGang(gang, { threads }), RangeError, "positive integer");
    }
    assertEquals(scanGang(gang, { threads: 100 }).threads, MAX_SCAN_THREADS);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("scanGang() leaves the allocated blocks of sparse guests unchanged", async () => {
  const pages = Array.from(
    { length: 256 },
    (_, i) => (i % 16 === 0 ? patternPage(i) : "hole" as const),
  );
  const path = makeRamFile(shmPath("sparse"), pages);
  try {
    using gang = Gang.open([{ name: "sparse", path }]);
    const before = gang.guests[0]!.ram.stat().blocks;
    const report = scanGang(gang);
    assertEquals(report.totals.zero, 240);
    assertEquals(gang.guests[0]!.ram.stat().blocks, before);
    assertEquals(before, 16 * (PAGE_SIZE / 512));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("rescanGuest() returns exactly the pages changed since the last scan", async () => {
  const paths = makeGang();
  try {
    using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })));
    scanGang(gang);
    assertEquals([...rescanGuest(gang, 1)], []);
    {
      using ram = RamFile.open(paths[1]!, { write: true });
      ram.write(Uint32Array.of(2, 4), new Uint8Array([...patternPage(50), ...p1])); // hole -> data; p1 -> p1
      ram.punch(0, 1);
    }
    assertEquals([...rescanGuest(gang, 1)], [0, 2]);
    assertEquals([...rescanGuest(gang, 1)], []);
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("a first read that confirms a duplicate in a premapped guest whose file shrank names that file", async () => {
  // Read a and fill its mapping (as a live round does after a guest's first read); truncate a;
  // b's first read finds a's contents: its confirms compare them where a's pages lay, in the
  // mapping, past the end of a's file now (SIGBUS there, without the library's guard).
  const a = makeRamFile(shmPath("a"), [p1, p2]);
  const b = makeRamFile(shmPath("b"), [p2, p1]);
  try {
    using gang = Gang.open([{ name: "a", path: a }, { name: "b", path: b }]);
    for (const _ of scanChunks(gang, 0)) { /* a's first read */ }
    await gang.guests[0]!.ram.premap();
    RamFile.open(a, { write: true }).resize(0);
    assertNamesEmptied(() => [...scanChunks(gang, 1)], a);
  } finally {
    await removeFiles(a, b);
  }
});

Deno.test("a first read confirms duplicates in a premapped guest: the same counts as without", async () => {
  const paths = makeGang();
  try {
    const counts = [];
    for (const premapped of [false, true]) {
      using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })));
      const kinds: number[] = []; // each page's kind and content id
      for (const guest of gang.guests) {
        const out = scanBuffers(16);
        for (const chunk of scanChunks(gang, guest.number, { out })) {
          kinds.push(...out.kinds.subarray(0, chunk.count), ...out.ids.subarray(0, chunk.count));
        }
        if (premapped) await guest.ram.premap();
      }
      counts.push(kinds);
    }
    assertEquals(counts[1], counts[0]);
  } finally {
    await removeFiles(...paths);
  }
});

/**
 * Scans makeGang()'s guests once for each way of first reads, two pages a
 * call (so that "measured" takes turns between the ways at first), and
 * returns what `look` saw of each call, by way.
 */
async function scanEachWay(
  bytes: PageBytes,
  look: (out: ScanBuffers, count: number) => unknown[],
): Promise<Map<FirstReads, unknown[]>> {
  const paths = makeGang();
  try {
    const found = new Map<FirstReads, unknown[]>();
    for (const way of ["copy", "in place", "measured"] as const) {
      using gang = Gang.open(paths.map((path, i) => ({ name: `g${i}`, path })));
      gang.index.setFirstReads(way);
      const seen: unknown[] = [];
      for (const guest of gang.guests) {
        const out = scanBuffers(2);
        for (let first = 0; first < guest.ram.pages; first += 2) {
          const count = Math.min(2, guest.ram.pages - first);
          out.buf.fill(0xaa);
          gang.index.scan(guest.number, first, count, out, { bytes });
          seen.push(...look(out, count));
        }
        seen.push([...gang.index.pageHashes(guest.number)]);
      }
      found.set(way, seen);
    }
    return found;
  } finally {
    await removeFiles(...paths);
  }
}

Deno.test("a scan that wants no bytes finds the same whether it reads pages first in place, by copy, or as measured", async () => {
  const found = await scanEachWay("none", (out, count) => [
    [...out.kinds.subarray(0, count)],
    [...out.ids.subarray(0, count)],
    // In place, pages that hold data are hashed where they lie, never copied into the buffer.
    out.buf.every((b) => b === 0xaa) ? "buffer untouched" : "buffer written",
  ]);
  const untouched = (way: FirstReads) =>
    found.get(way)!.filter((seen) => seen === "buffer untouched").length;
  assertEquals(untouched("copy"), 0);
  assertEquals(untouched("in place"), 7, "every call: 2 pages, or 1 at a guest's end");
  const results = (way: FirstReads) => found.get(way)!.filter((seen) => typeof seen !== "string");
  assertEquals(results("in place"), results("copy"));
  assertEquals(results("measured"), results("copy"));
});

Deno.test("a scan that wants bytes holds every data page's bytes whether it reads pages first in place, by copy, or as measured", async () => {
  const found = await scanEachWay(
    "all",
    (out, count) =>
      [...out.kinds.subarray(0, count)].map((kind, i) => [
        kind,
        out.ids[i],
        // The bytes of a page that holds data; a zero page or a hole is not looked at.
        kind === PageKind.Zero
          ? "zero"
          : [...out.buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)].join(),
      ]),
  );
  assertEquals(found.get("in place"), found.get("copy"));
  assertEquals(found.get("measured"), found.get("copy"));
});

Deno.test("Gang.open() refuses sparse files whose index would take over half of the host's memory, and a guest of 16 TiB", async () => {
  // Sparse files of 15 TiB (nothing allocated), as many as it takes: 12 index bytes a page.
  const needed = Math.ceil((totalMemory() / 2 / 12) * PAGE_SIZE) + 2 ** 30;
  const each = 15 * 2 ** 40;
  const paths = Array.from({ length: Math.ceil(needed / each) }, (_, i) => shmPath(`huge${i}`));
  try {
    for (const path of paths) {
      using file = Deno.openSync(path, { create: true, write: true });
      file.truncateSync(each);
    }
    const error = assertThrows(() => Gang.open(paths.map((path, i) => ({ name: `g${i}`, path }))));
    assert(
      /^Cannot open a gang of [0-9.]+ TiB of guest RAM: its page index needs [0-9.]+ GiB of memory, over half of this host's [0-9.]+ GiB$/
        .test(error.message),
      error.message,
    );
    await Deno.truncate(paths[0]!, 16 * 2 ** 40);
    assertThrows(
      () => RamFile.open(paths[0]!),
      NativeError,
      `Cannot open guest RAM "${
        paths[0]
      }": it is 16 TiB or more (2^32 - 2 pages), over what gangway takes for a guest`,
    );
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("Gang.open() refuses missing, empty, directory and repeated files with a clear error", async () => {
  const good = makeRamFile(shmPath("good"), [p1]);
  const other = makeRamFile(shmPath("other"), [p2]);
  const empty = makeRamFile(shmPath("empty"), []);
  try {
    const missing = shmPath("missing");
    assertThrows(
      () => Gang.open([{ name: "m", path: missing }]),
      Error,
      `"${missing}": no such file`,
    );
    assertThrows(() => Gang.open([{ name: "e", path: empty }]), Error, "file is empty");
    assertThrows(() => Gang.open([{ name: "d", path: "/dev/shm" }]), Error, "is a directory");
    assertThrows(
      () => Gang.open([{ name: "x", path: good }, { name: "y", path: good }]),
      Error,
      "is the same file as",
    );
    assertThrows(
      () => Gang.open([{ name: "x", path: good }, { name: "x", path: other }]),
      Error,
      'two guests are named "x"',
    );
    assertThrows(() => Gang.open([]), Error, "no guests given");
  } finally {
    await removeFiles(good, other, empty);
  }
});

Deno.test("a first read in place of a guest whose RAM file shrank names it, whatever bytes the scan wants", async () => {
  for (const bytes of ["all", "none"] as const) {
    const a = makeRamFile(shmPath("a"), [p1, p2]);
    try {
      using gang = Gang.open([{ name: "a", path: a }]);
      gang.index.setFirstReads("in place");
      RamFile.open(a, { write: true }).resize(0);
      assertNamesEmptied(() => gang.index.scan(0, 0, 2, scanBuffers(2), { bytes }), a);
    } finally {
      await removeFiles(a);
    }
  }
});

Deno.test("rescanGuest() names a guest whose RAM file shrank instead of dying of SIGBUS", async () => {
  // Scan [a, b]; truncate a; give b a's old contents; rescan b: looking up b's new pages
  // compares them with a's pages, which are gone from the file.
  const a = makeRamFile(shmPath("a"), [p1, p2]);
  const b = makeRamFile(shmPath("b"), [p3, p4]);
  try {
    using gang = Gang.open([{ name: "a", path: a }, { name: "b", path: b }]);
    scanGang(gang);
    RamFile.open(a, { write: true }).resize(0);
    makeRamFile(b, [p1, p2]);
    assertNamesEmptied(() => rescanGuest(gang, 1), a);
  } finally {
    await removeFiles(a, b);
  }
});
