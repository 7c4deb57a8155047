import { assertEquals, assertNotEquals, assertThrows } from "./_assert.ts";
import { guestDigest, heldGuestDigest } from "../src/transfer/digests.ts";
import { MAX_CONTENTS_PER_PAGE, NONE, TargetContents, ZERO } from "../src/plan/target_contents.ts";

Deno.test("a guest's digest as the target holds it is the digest of its pages' content hashes", () => {
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
    const expected = BigUint64Array.from({ length: target.pages[guest]! }, (_, p) => {
      const id = target.contentAt(base + p);
      return id === ZERO ? zeroHash : target.hashOf(id);
    });
    const size = target.pages[guest]! * 4096 - 100;
    assertEquals(
      heldGuestDigest(target, guest, zeroHash, 77n, size),
      guestDigest(expected, 77n, size),
    );
  }
  // A page changed: the digest changes with it.
  const before = heldGuestDigest(target, 1, zeroHash, 77n, 500 * 4096);
  target.assign(target.bases[1]! + 3, 2499);
  assertNotEquals(heldGuestDigest(target, 1, zeroHash, 77n, 500 * 4096), before);
});

Deno.test("a retired guest's pages stop holding contents from the next question on", () => {
  const target = new TargetContents([2, 2]);
  const id = target.addContent(5n);
  target.assign(0, id); // guest 0 holds it first
  target.assign(2, id);
  target.retire(0);
  // Joins while the retirement is pending, behind the retired first holder.
  target.assign(3, id);
  assertEquals(target.locate(target.holder(id)).guest, 1);
  target.retire(1);
  assertEquals(target.holder(id), NONE);
  // A retired page keeps its content, for its guest's digest.
  assertEquals(target.contentAt(0), id);
});

Deno.test("a gang registers at most MAX_CONTENTS_PER_PAGE contents a page", () => {
  const target = new TargetContents([2, 1]);
  assertEquals(target.maxContents, 3 * MAX_CONTENTS_PER_PAGE);
  for (let id = 0; id < target.maxContents; id++) {
    target.assign(id % 3, target.addContent(BigInt(id)));
  }
  assertThrows(() => target.addContent(1n), RangeError, "may register 24 contents");
});
