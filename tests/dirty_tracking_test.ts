import { assert, assertEquals, assertRejects, assertSameBytes, assertThrows } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { GangSender } from "../src/transfer/sender.ts";
import { randomSeed } from "../src/transfer/seed.ts";
import { type DirtyTracker, mappingAddress, SoftDirtyTracker } from "../src/plan/dirty_tracking.ts";
import { softDirtySupported } from "../src/native/pagemap.ts";
import { hashPages } from "../src/native/hashing.ts";
import { copyPages, PAGE_SIZE, RamFile } from "../src/native/ram_file.ts";
import { makeRamFile, patternPage, readRamFile, removeFiles, shmPath } from "./_fixtures.ts";
import { startReceiver } from "./_transfer.ts";

Deno.test("rounds after the first re-read only the pages the dirty tracker names", async () => {
  const path = makeRamFile(shmPath("tracked"), Array.from({ length: 8 }, (_, p) => patternPage(p)));
  await using receiver = await startReceiver();
  try {
    let started = 0;
    const tracker: DirtyTracker = {
      kind: "soft-dirty",
      start: () => void started++,
      changed: () => Uint8Array.of(0, 0, 1, 0, 0, 0, 0, 0),
    };
    using gang = Gang.open([{ name: "vm", path }], { seed: randomSeed() });
    await using sender = await GangSender.connect(gang, await receiver.connect(), {
      dirtyTracker: tracker,
    });
    await sender.prepare();
    assertEquals(started, 1, "tracking starts with the preparation scan");
    assertEquals((await sender.round()).pages.unique, 8, "round 1 reads and sends every page");
    {
      using ram = RamFile.open(path, { write: true });
      ram.write(Uint32Array.of(2, 5), new Uint8Array([...patternPage(100), ...patternPage(101)]));
    }
    const round2 = await sender.round({ final: true });
    assertEquals(round2.pages.unique, 1, "only page 2 was re-read");
    await sender.verify();
    assertEquals(sender.dirtyTracking, "soft-dirty");
    // Page 5 was written behind the tracker's back: the target keeps its old content.
    const target = readRamFile(`${receiver.dir}/vm`);
    assertSameBytes(target.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE), patternPage(100));
    assertSameBytes(target.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE), patternPage(5));
  } finally {
    await removeFiles(path);
  }
});

Deno.test("mappingAddress() finds where a process maps a RAM file, and only a mapped one", async () => {
  const path = makeRamFile(shmPath("mapped"), [patternPage(1), patternPage(2)]);
  const unmapped = makeRamFile(shmPath("unmapped"), [patternPage(3)]);
  try {
    using ram = RamFile.open(path, { write: true });
    copyPages(ram, {
      sources: [ram],
      sourcePages: Uint32Array.of(0),
      targetPages: Uint32Array.of(1),
      hashes: hashPages(patternPage(1), 1, 0n).hashes,
    }, 0n); // the library maps the file to read page 0
    const address = await mappingAddress(Deno.pid, path);
    assert(address > 0n && address % BigInt(PAGE_SIZE) === 0n, `address 0x${address.toString(16)}`);
    // What lies at that address is the file's first page (page 1 now holds a copy of it too).
    const mapped = new Deno.UnsafePointerView(Deno.UnsafePointer.create(address)!);
    assertSameBytes(new Uint8Array(mapped.getArrayBuffer(PAGE_SIZE)), patternPage(1));
    await assertRejects(
      () => mappingAddress(Deno.pid, unmapped),
      Error,
      `Cannot find the mapping of "${unmapped}" in process ${Deno.pid}`,
    );
  } finally {
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
