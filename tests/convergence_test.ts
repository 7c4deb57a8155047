import { assertEquals, assertThrows } from "./_assert.ts";
import {
  checkThrottleSteps,
  shouldStopLiveRounds,
  throttleRounds,
  whyStopLiveRounds,
} from "../src/plan/convergence.ts";

const rounds = (...pages: number[]) => pages.map((pagesSent, i) => ({ round: i + 1, pagesSent }));

Deno.test("shouldStopLiveRounds() goes on while rounds shrink and the last one is large", () => {
  assertEquals(shouldStopLiveRounds([]), false, "round 1 always runs live");
  assertEquals(
    shouldStopLiveRounds(rounds(60_000)),
    false,
    "round 1 says nothing about convergence",
  );
  assertEquals(shouldStopLiveRounds(rounds(60_000, 9_000, 5_000)), false);
});

Deno.test("shouldStopLiveRounds() stops when the last live round was small", () => {
  assertEquals(shouldStopLiveRounds(rounds(60_000, 2_000)), true);
  assertEquals(shouldStopLiveRounds(rounds(60_000, 100), { stopPages: 50 }), false);
});

Deno.test("shouldStopLiveRounds() stops when a round no longer shrinks the next by a quarter", () => {
  assertEquals(shouldStopLiveRounds(rounds(60_000, 9_000, 8_000)), true);
  assertEquals(shouldStopLiveRounds(rounds(60_000, 9_000, 6_000)), false);
  // Round 1 is no yardstick: a round 2 as large as round 1 does not stop by itself.
  assertEquals(shouldStopLiveRounds(rounds(9_000, 9_000)), false);
});

Deno.test("shouldStopLiveRounds() stops at the round limit, the final round included", () => {
  assertEquals(shouldStopLiveRounds([], { maxRounds: 1 }), true, "one round: only the final one");
  assertEquals(shouldStopLiveRounds(rounds(60_000, 50_000, 40_000), { maxRounds: 4 }), true);
  assertEquals(shouldStopLiveRounds(rounds(60_000, 50_000), { maxRounds: 4 }), false);
});

Deno.test("shouldStopLiveRounds() stops when what changed since the last round is estimated small", () => {
  const after = (changedAfter: number) => [{ round: 1, pagesSent: 60_000, changedAfter }];
  assertEquals(shouldStopLiveRounds(after(400)), true, "round 1 can end the live rounds");
  assertEquals(shouldStopLiveRounds(after(2_049)), false);
  assertEquals(shouldStopLiveRounds(after(400), { stopPages: 100 }), false);
});

Deno.test("whyStopLiveRounds() tells rounds that stalled from rounds that converged or ran out", () => {
  assertEquals(whyStopLiveRounds(rounds(60_000, 9_000)), undefined);
  assertEquals(whyStopLiveRounds(rounds(60_000, 9_000, 8_000)), "stalled");
  assertEquals(whyStopLiveRounds(rounds(60_000, 1_000)), "converged");
  assertEquals(whyStopLiveRounds(rounds(60_000, 9_000, 8_000), { maxRounds: 4 }), "round limit");
  assertEquals(whyStopLiveRounds([], { maxRounds: 1 }), "round limit");
});

Deno.test("whyStopLiveRounds() counts the threshold once for each pause the gang ends in", () => {
  const after = (changedAfter: number) => [{ round: 1, pagesSent: 60_000, changedAfter }];
  // Four guests ending one at a time, 7,000 pages changed in all: under 2,048 a guest.
  assertEquals(whyStopLiveRounds(after(7_000)), undefined, "one pause: too many");
  assertEquals(whyStopLiveRounds(after(7_000), {}, 4), "converged");
  assertEquals(whyStopLiveRounds(after(9_000), {}, 4), undefined, "over 2,048 a guest");
  assertEquals(shouldStopLiveRounds(rounds(60_000, 9_000), { stopPages: 3_000 }, 3), true);
  assertEquals(whyStopLiveRounds(rounds(60_000, 9_000, 8_000), {}, 2), "stalled");
  for (const pauses of [0, 1.5, -1]) {
    assertThrows(() => whyStopLiveRounds([], {}, pauses), RangeError, "positive integer");
  }
});

Deno.test("whyStopLiveRounds() ends the rounds once each guest's own catch-up round would leave its final round small", () => {
  const PAGE = 4096;
  /** Round 2 put `pagesWorth` pages' worth of bytes on the wire; `changedAfter` changed after it. */
  const after = (changedAfter: number, pagesWorth = 60_000, mostChangedInOneGuest?: number) => [
    { round: 1, pagesSent: 60_000 },
    {
      round: 2,
      pagesSent: 60_000,
      bytesOnWire: pagesWorth * PAGE,
      changedAfter,
      ...(mostChangedInOneGuest !== undefined && { mostChangedInOneGuest }),
    },
  ];
  // 9,000 changed after a round of 60,000 pages' worth, 2,250 in each of 4 guests (over 2,048): a
  // guest writes about 2,250 * 2,250 / 60,000 = 84 while its catch-up sends its 2,250, and the last
  // one, which waits for three catch-ups first, about 94.
  assertEquals(whyStopLiveRounds(after(9_000, 60_000, 2_250), {}, 4), "converged");
  assertEquals(whyStopLiveRounds(after(9_000, 60_000, 2_250), {}, 1), undefined, "one pause");
  assertEquals(whyStopLiveRounds(after(9_000, 60_000, 2_250), { stopPages: 50 }, 4), undefined);
  assertEquals(
    whyStopLiveRounds(after(9_000, 60_000, 2_250), {}, 4, true),
    undefined,
    "guests that may be slowed: the rounds go on until they stall",
  );
  // The guest that changed most counts: 8,000 of the 9,000 in one writes about 1,067, 1,493 if
  // it goes last; without the figure, all 9,000 count as one guest's (1,958).
  assertEquals(whyStopLiveRounds(after(9_000, 60_000, 8_000), {}, 4), "converged");
  assertEquals(whyStopLiveRounds(after(9_000, 60_000), {}, 4), "converged");
  assertEquals(whyStopLiveRounds(after(10_000, 60_000), {}, 4), undefined, "2,500");
  assertEquals(whyStopLiveRounds(after(12_000, 9_000, 12_000), {}, 4), undefined, "16,000");
  // Bytes, not pages: a round that compressed 60,000 pages into 20,000 pages' worth is a third as
  // long, and 4,000 changed a guest write about 800 during a catch-up (1,280 the last of 4).
  assertEquals(whyStopLiveRounds(after(16_000, 20_000, 4_000), {}, 4), "converged");
  assertEquals(whyStopLiveRounds(after(28_000, 20_000, 7_000), {}, 4), undefined, "2,450");
  // The later guests: 5,000 a guest write 1,250 during a catch-up; the last of 4 sends 5,000 +
  // 3 * 1,250 and writes 2,188 meanwhile, the second of 2 sends 6,250 and writes 1,563.
  assertEquals(whyStopLiveRounds(after(20_000, 20_000, 5_000), {}, 4), undefined);
  assertEquals(whyStopLiveRounds(after(10_000, 20_000, 5_000), {}, 2), "converged");
  // Without the round's bytes, the catch-ups are not judged.
  assertEquals(
    whyStopLiveRounds(rounds(60_000, 60_000).map((r) => ({ ...r, changedAfter: 9_000 })), {}, 4),
    undefined,
  );
});

Deno.test("checkThrottleSteps() refuses steps that would never reach their most", () => {
  checkThrottleSteps({ max: 0.99 });
  checkThrottleSteps({ max: 0.05, initial: 0.01, step: 0.01 });
  for (
    const steps of [
      { max: 1 },
      { max: 0.5, step: 0 },
      { max: 0.5, step: 0.001 },
      { max: 0.5, initial: 0 },
      { max: 0.5, step: -0.1 },
      { max: Infinity },
      { max: NaN },
      { max: 0.5, initial: NaN },
    ]
  ) {
    assertThrows(() => checkThrottleSteps(steps), RangeError, "a share from 0.01 to 0.99");
    assertThrows(() => throttleRounds(steps), RangeError);
  }
});
