import { assert, assertEquals, assertRejects, assertSameBytes, assertThrows } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { type DirtyTracker, mappingAddress, SoftDirtyTracker } from "../src/plan/dirty_tracking.ts";
import { softDirtySupported } from "../src/native/pagemap.ts";
import { PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";

/**
 * A tracker that counts its starts, notes how many contents the gang's index held at the first
 * (none: no page was read yet), and names only page 2 of every guest as changed.
 */
function pageTwoTracker(
  gang?: Gang,
): DirtyTracker & { started: number; asked: number; contentsAtStart?: number } {
  return {
    kind: "soft-dirty",
    started: 0,
    asked: 0,
    contentsAtStart: undefined as number | undefined,
    start() {
      this.started++;
      this.contentsAtStart ??= gang?.index.contents;
    },
    changed(this: { asked: number }) {
      this.asked++;
      return Uint8Array.of(0, 0, 1, 0, 0, 0, 0, 0);
    },
  };
}

for (const prepared of [true, false]) {
  Deno.test(
    `rounds after the first re-read only the pages the dirty tracker names (${
      prepared ? "after a preparation scan" : "round 1 scans"
    })`,
    async () => {
      const pages = Array.from({ length: 8 }, (_, p) => patternPage(p));
      const path = makeRamFile(shmPath("tracked"), pages);
      await using receiver = await startReceiver();
      try {
        using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
        const tracker = pageTwoTracker(gang);
        await using sender = await GangSender.connect(gang, await receiver.connect(), {
          dirtyTracker: tracker,
        });
        if (prepared) {
          await sender.prepare();
          assertEquals(tracker.started, 1, "tracking starts with the preparation scan");
        }
        assertEquals((await sender.round()).pages.unique, 8, "round 1 reads and sends every page");
        assertEquals(tracker.started, 1, "tracking started once");
        assertEquals(tracker.contentsAtStart, 0, "before any page was read");
        assertEquals(tracker.asked, 0, "round 1 reads every page whatever the tracker says");
        {
          using ram = RamFile.open(path, { write: true });
          ram.write(
            Uint32Array.of(2, 5),
            new Uint8Array([...patternPage(100), ...patternPage(101)]),
          );
        }
        const round2 = await sender.round({ final: true });
        assertEquals(round2.pages.unique, 1, "only page 2 was re-read");
        assertEquals(round2.pages.dirtiedIdentical, 0);
        await sender.verify();
        assertEquals(sender.dirtyTracking, "soft-dirty");
        // Page 5 was written behind the tracker's back: the target keeps its old content.
        const target = readRamFile(`${receiver.dir}/vm`);
        assertSameBytes(target.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE), patternPage(100));
        assertSameBytes(target.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE), patternPage(5));
      } finally {
        await removeFiles(path);
      }
    },
  );
}

Deno.test("a guest's first read sends every page, even in a round after the first", async () => {
  // Guest b is first read by the final round, after guest a was finished alone: the tracker names
  // only page 2 of each, but the target holds nothing of b yet.
  const paths = ["first-a", "first-b"].map((name, g) =>
    makeRamFile(shmPath(name), Array.from({ length: 8 }, (_, p) => patternPage(10 * g + p)))
  );
  await using receiver = await startReceiver();
  try {
    const tracker = pageTwoTracker();
    using gang = Gang.open(paths.map((path, g) => ({ name: `vm${g}`, path })), {
      seed: randomSeed(),
    });
    await using sender = await GangSender.connect(gang, await receiver.connect(), {
      dirtyTracker: tracker,
    });
    assertEquals((await sender.finishGuest(0)).pages.unique, 8);
    assertEquals((await sender.round({ final: true })).pages.unique, 8);
    assertEquals(tracker.asked, 0);
    await sender.verify();
    paths.forEach((path, g) =>
      assertSameBytes(readRamFile(`${receiver.dir}/vm${g}`), readRamFile(path))
    );
  } finally {
    await removeFiles(...paths);
  }
});

Deno.test("estimateChanged() samples what a round now would find changed, and changes nothing", async () => {
  // Guest 0 is read by round 1, then every page of it changes; guest 1 is finished; guest 2 was
  // never read: it counts whole.
  const pages = 700;
  const paths = ["estimate-a", "estimate-b", "estimate-c"].map((name, g) =>
    makeRamFile(shmPath(name), Array.from({ length: pages }, (_, p) => patternPage(1000 * g + p)))
  );
  await using receiver = await startReceiver();
  try {
    using gang = Gang.open(paths.map((path, g) => ({ name: `vm${g}`, path })), {
      seed: randomSeed(),
    });
    await using sender = await GangSender.connect(gang, await receiver.connect());
    await sender.finishGuest(1);
    assertEquals(sender.estimateChanged(), 2 * pages, "guests 0 and 2 were never read");
    await sender.round();
    assertEquals(sender.estimateChanged(), 0, "nothing changed since round 1");
    {
      using ram = RamFile.open(paths[0]!, { write: true });
      const changed = Uint32Array.from({ length: pages }, (_, p) => p);
      ram.write(changed, new Uint8Array(pages * PAGE_SIZE).fill(7));
    }
    assertEquals(sender.estimateChanged(), pages, "every page of guest 0 changed");
    assertEquals(sender.estimateChanged(), pages, "the estimate changed nothing");
    const final = await sender.round({ final: true });
    assertEquals(final.pages.unique, 1, "the final round still finds every changed page");
    assertEquals(final.pages.sentIdentical, pages - 1);
    await sender.verify();
    assertSameBytes(readRamFile(`${receiver.dir}/vm0`), readRamFile(paths[0]!));
  } finally {
    await removeFiles(...paths);
  }
});

/** Maps a file read-only and shared into this process, as QEMU maps guest RAM (libc through FFI). */
function mapFile(path: string, bytes: number): { address: bigint; unmap: () => void } {
  const libc = Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
    munmap: { parameters: ["pointer", "usize"], result: "i32" },
  });
  const PROT_READ = 1, MAP_SHARED = 1;
  const fd = libc.symbols.open(new TextEncoder().encode(path + "\0"), 0);
  assert(fd >= 0, `open ${path}`);
  const map = libc.symbols.mmap(null, BigInt(bytes), PROT_READ, MAP_SHARED, fd, 0n);
  libc.symbols.close(fd); // the mapping keeps the file
  const address = BigInt(Deno.UnsafePointer.value(map));
  assert(address !== 2n ** 64n - 1n && address !== 0n, "mmap failed");
  return {
    address,
    unmap: () => {
      libc.symbols.munmap(map, BigInt(bytes));
      libc.close();
    },
  };
}

Deno.test("mappingAddress() finds where a process maps a RAM file, and only a mapped one", async () => {
  const path = makeRamFile(shmPath("mapped"), [patternPage(1), patternPage(2)]);
  const unmapped = makeRamFile(shmPath("unmapped"), [patternPage(3)]);
  const mapping = mapFile(path, 2 * PAGE_SIZE);
  try {
    const address = await mappingAddress(Deno.pid, path);
    assertEquals(address, mapping.address);
    // What lies at that address is the file's first page.
    const mapped = new Deno.UnsafePointerView(Deno.UnsafePointer.create(address)!);
    assertSameBytes(new Uint8Array(mapped.getArrayBuffer(PAGE_SIZE)), patternPage(1));
    await assertRejects(
      () => mappingAddress(Deno.pid, unmapped),
      Error,
      `Cannot find the mapping of "${unmapped}" in process ${Deno.pid}`,
    );
  } finally {
    mapping.unmap();
    await removeFiles(path, unmapped);
  }
});

Deno.test({
  name: softDirtySupported()
    ? "SoftDirtyTracker refuses a kernel without soft-dirty bits (skipped: this kernel has them)"
    : "SoftDirtyTracker refuses a kernel without soft-dirty bits",
  ignore: softDirtySupported(),
  fn() {
    assertThrows(() => new SoftDirtyTracker([]), Error, "CONFIG_MEM_SOFT_DIRTY");
  },
});
