import { assert, assertEquals, assertNotEquals, assertThrows } from "./_assert.ts";
import { guestDigest, heldGuestDigest } from "../src/transfer/digests.ts";
import { contentsDigest } from "../src/native/hashing.ts";
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
  // A content id the table does not have (never a receiver's own): refused, not read past.
  assertThrows(
    () =>
      contentsDigest(Uint32Array.of(0, 2500), target.contentHashes(), { id: ZERO, hash: 0n }, 1n),
    RangeError,
    "not a content's",
  );
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
  // Joins behind the retired first holder, which is still at the head.
  target.assign(3, id);
  assertEquals(target.locate(target.holder(id)).guest, 1);
  target.retire(1);
  assertEquals(target.holder(id), NONE);
  // A retired page keeps its content, for its guest's digest.
  assertEquals(target.contentAt(0), id);
});

Deno.test("holder() answers with a page of a live guest holding the content, or NONE when none does (against a model)", () => {
  const target = new TargetContents([40, 30, 50]);
  const total = 120;
  const contents = 25;
  for (let id = 0; id < contents; id++) target.addContent(BigInt(id));
  const held = new Array<number>(total).fill(ZERO); // the model: each page's content
  const retired = new Set<number>();
  const guestOf = (page: number) => target.locate(page).guest;
  let seed = 42;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let step = 0; step < 20_000; step++) {
    const page = random(total);
    const op = random(100);
    if (op === 0 && step > 2000 && retired.size < 2) {
      const guest = random(3);
      retired.add(guest);
      target.retire(guest);
    } else if (!retired.has(guestOf(page))) {
      if (op < 30) {
        target.zero(page);
        held[page] = ZERO;
      } else {
        const id = random(contents);
        target.assign(page, id);
        held[page] = id;
      }
    }
    const id = random(contents);
    const holder = target.holder(id);
    const live = held.some((c, p) => c === id && !retired.has(guestOf(p)));
    if (!live) {
      assertEquals(holder, NONE, `step ${step}: content ${id} is held by no live page`);
    } else {
      assertEquals(held[holder], id, `step ${step}: page ${holder} holds content ${id}`);
      assert(!retired.has(guestOf(holder)), `step ${step}: page ${holder} is of a retired guest`);
    }
  }
  assertEquals(retired.size, 2, "two guests were retired along the way");
});

Deno.test("a gang registers at most MAX_CONTENTS_PER_PAGE contents a page", () => {
  const target = new TargetContents([2, 1]);
  assertEquals(target.maxContents, 3 * MAX_CONTENTS_PER_PAGE);
  for (let id = 0; id < target.maxContents; id++) {
    target.assign(id % 3, target.addContent(BigInt(id)));
  }
  assertThrows(() => target.addContent(1n), RangeError, "may register 24 contents");
});
