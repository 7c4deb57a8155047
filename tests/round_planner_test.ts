/**
 * The round planner's grouping rule: a chunk's operations may go grouped
 * by kind (full pages, references, zero pages) only when no content a
 * reference names is taken off a page by a full or zero page of the same
 * chunk; else the target could copy a page's new content where its old
 * one was meant.
 */
import { assertEquals } from "./_assert.ts";
import { Gang } from "../src/scan/gang.ts";
import { scanChunks } from "../src/scan/scan_chunks.ts";
import { emptyCounts, Op, RoundPlanner } from "../src/plan/round_planner.ts";
import { scanBuffers } from "../src/native/content_index.ts";
import { ChunkConflicts } from "../src/plan/chunk_conflicts.ts";
import { PAGE_SIZE } from "../src/native/ram_file.ts";

const PAGES = 4;

/** Plans one whole read of the guest: its ops and whether they may be grouped. */
function planRead(gang: Gang, planner: RoundPlanner, firstRead: boolean) {
  const out = scanBuffers(PAGES);
  const [chunk] = [...scanChunks(gang, 0, { out, bytes: firstRead ? "all" : "changed" })];
  const plan = planner.planChunk(0, chunk!.first, chunk!.count, out, firstRead, emptyCounts());
  return { ops: [...plan.ops.subarray(0, plan.length)], groupable: plan.groupable };
}

Deno.test("a chunk that references a content another of its pages loses is not grouped, one that does not is", async () => {
  const path = await Deno.makeTempFile({ dir: "/dev/shm", prefix: "gangway-planner-test-" });
  try {
    const page = (byte: number) => new Uint8Array(PAGE_SIZE).fill(byte);
    const write = (...bytes: number[]) => {
      const ram = new Uint8Array(PAGES * PAGE_SIZE);
      bytes.forEach((byte, i) => ram.set(page(byte), i * PAGE_SIZE));
      Deno.writeFileSync(path, ram);
    };
    write(1, 2, 1, 3);
    using gang = Gang.open([{ name: "g", path }]);
    const planner = new RoundPlanner(gang, PAGES);
    assertEquals(planRead(gang, planner, true), {
      ops: [Op.Full, Op.Full, Op.Ref, Op.Full],
      groupable: true,
    });

    // Page 0 takes a new content, and with it loses one that page 3 now takes from page 2 (a
    // reference): grouped by kind, the target could copy page 0's new content to page 3.
    write(5, 2, 1, 1);
    assertEquals(planRead(gang, planner, false), { ops: [Op.Full, Op.Ref], groupable: false });

    // Page 2 takes a new content, page 3 a copy of page 1's: what is named is not what is taken off.
    write(5, 2, 6, 2);
    assertEquals(planRead(gang, planner, false), { ops: [Op.Full, Op.Ref], groupable: true });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("the conflict marks still tell a conflict once their 32-bit chunk stamps wrap", () => {
  const conflicts = new ChunkConflicts(0xffffffff - 2);
  for (let chunk = 0; chunk < 5; chunk++) {
    conflicts.start();
    conflicts.overwrite(7);
    assertEquals(conflicts.found, false, `chunk ${chunk}, before`);
    conflicts.reference(7);
    assertEquals(conflicts.found, true, `chunk ${chunk}, after`);
  }
  conflicts.start();
  conflicts.reference(7); // marked in the chunk before only: no conflict in this one
  assertEquals(conflicts.found, false);
});
