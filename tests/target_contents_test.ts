import { assertEquals, assertThrows } from "./_assert.ts";
import { MAX_CONTENTS_PER_PAGE, TargetContents, ZERO } from "../src/plan/target_contents.ts";

Deno.test("guestHashes gives each page of a guest its content's hash, and zero pages the zero hash", () => {
  const target = new TargetContents([3000, 500]);
  // More contents than the first table holds (1,024): hashes that use both 32-bit halves.
  for (let id = 0; id < 2500; id++) {
    target.addContent(0xfedc_ba98_0000_0000n + BigInt(id) * 0x1_0001n);
  }
  for (let page = 0; page < 3500; page++) {
    if (page % 7 !== 0) target.assign(page, (page * 13) % 2500);
  }
  const zeroHash = 0x1234_5678_9abc_def0n;
  for (const guest of [0, 1]) {
    const base = target.bases[guest]!;
    const expected = Array.from({ length: target.pages[guest]! }, (_, p) => {
      const id = target.contentAt(base + p);
      return id === ZERO ? zeroHash : target.hashOf(id);
    });
    assertEquals([...target.guestHashes(guest, zeroHash)], expected);
  }
});

Deno.test("a gang registers at most MAX_CONTENTS_PER_PAGE contents a page", () => {
  const target = new TargetContents([2, 1]);
  assertEquals(target.maxContents, 3 * MAX_CONTENTS_PER_PAGE);
  for (let id = 0; id < target.maxContents; id++) {
    target.assign(id % 3, target.addContent(BigInt(id)));
  }
  assertThrows(() => target.addContent(1n), RangeError, "may register 24 contents");
});
